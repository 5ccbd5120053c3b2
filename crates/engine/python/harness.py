"""runlog worker harness: runs Python functions and class methods for the engine.

The engine starts one `python -u harness.py` per worker and talks to it with one
JSON object per line: requests on stdin, messages on stdout. The function's own
output must never corrupt that channel, so at start-up the harness keeps a private
duplicate of fd 1 for the protocol and points fd 1 at a pipe it drains itself;
`sys.stdout`, `sys.stderr` and `logging` are replaced by line emitters.

Messages to the engine:
  {"ready": true}                                    once, after start-up
  {"stream": "stdout"|"stderr", "line": "..."}        function output, one line each
  {"stream": "log", "level": "info", "line": "..."}   a logging record
  {"done": {...}, "call": id}                         the end of request `id`
"""

import asyncio
import base64
import importlib
import inspect
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import traceback

_proto = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
# The end-of-call mark goes down the stderr pipe the engine reads, even if a function
# points fd 2 somewhere else (its own file must not get the marks).
_stderr_pipe = os.dup(2)
# Requests arrive on a private duplicate of fd 0; the function and its children see
# an empty stdin, so nothing they read can swallow a request.
_requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
os.close(_null)
sys.stdin = io.StringIO("")
_proto_lock = threading.Lock()


# Id of the request being served; output lines carry it so that a line printed by a
# background thread after its call ended is never credited to the next call.
_current = None


def _send(msg):
    if "stream" in msg:
        msg["call"] = _current
    text = json.dumps(msg, ensure_ascii=False)
    with _proto_lock:
        _proto.write(text + "\n")
        _proto.flush()


class _LineStream:
    """A text stream that sends every complete line as one message."""

    def __init__(self, name):
        self._name = name
        self._buf = ""
        self._lock = threading.Lock()
        self.encoding = "utf-8"
        self.errors = "replace"

    def write(self, s):
        if not isinstance(s, str):
            s = str(s)
        with self._lock:
            self._buf += s
            while "\n" in self._buf:
                line, self._buf = self._buf.split("\n", 1)
                _send({"stream": self._name, "line": line})
        return len(s)

    def flush(self):
        with self._lock:
            if self._buf:
                line, self._buf = self._buf, ""
                _send({"stream": self._name, "line": line})

    def isatty(self):
        return False

    def writable(self):
        return True

    def fileno(self):
        # Code that needs a real descriptor (subprocess with stdout=sys.stdout)
        # gets fd 1, which the drain thread below turns into lines too.
        return 1 if self._name == "stdout" else 2


class _FdDrain:
    """Turns bytes written to fd 1 (C extensions, child processes) into lines.

    `sync()` writes a marker through the same pipe and waits until the drain
    thread reaches it, so everything written before the end of a call is sent
    before that call's `done`.
    """

    _MARK = b"\x00runlog-sync\x00"

    def __init__(self):
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 1)
        os.close(write_fd)
        self._reader = os.fdopen(read_fd, "rb")
        self._synced = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        pending = b""
        while True:
            chunk = os.read(self._reader.fileno(), 65536)
            if not chunk:
                return
            pending += chunk
            while b"\n" in pending:
                raw, pending = pending.split(b"\n", 1)
                if raw.endswith(self._MARK):
                    raw = raw[: -len(self._MARK)]
                    if raw:
                        _send({"stream": "stdout", "line": raw.decode("utf-8", "replace")})
                    self._synced.set()
                    continue
                _send({"stream": "stdout", "line": raw.decode("utf-8", "replace")})

    def sync(self):
        self._synced.clear()
        os.write(1, self._MARK + b"\n")
        self._synced.wait(2.0)


def _mark_stderr(call):
    """Ends call `call` on raw fd 2, which the engine reads apart from the protocol:
    what a subprocess or C extension wrote there before this mark is the call's."""
    try:
        os.write(_stderr_pipe, b"\x00runlog-stderr-end " + str(call).encode() + b"\x00\n")
    except OSError:  # fd 2 closed by the function: nothing to credit
        pass


class _LogHandler(logging.Handler):
    def emit(self, record):
        try:
            _send({"stream": "log", "level": _level_name(record.levelno), "line": self.format(record)})
        except Exception:  # a broken record must not kill the worker
            self.handleError(record)


def _level_name(levelno):
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warn"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


# The fd drain thread hands the GIL back to the main thread at the end of every call;
# at the default 5 ms switch interval that hand-over alone dominated the p99 of a warm
# call (measured by the function_call bench).
sys.setswitchinterval(0.0005)
_drain = _FdDrain()
_stdout = _LineStream("stdout")
_stderr = _LineStream("stderr")
_handler = _LogHandler()
_handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
_cwd = os.getcwd()


def _reset():
    """Undoes what an earlier call on this worker may have changed in the plumbing
    (a replaced sys.stdout, removed log handlers, another working directory), so
    every call's output is captured the same way."""
    sys.stdout = _stdout
    sys.stderr = _stderr
    logging.root.handlers = [_handler]
    logging.root.setLevel(logging.INFO)
    try:
        os.chdir(_cwd)
    except OSError:
        pass


_reset()


def _decode(value, serialization):
    if serialization == "json":
        return value
    import cloudpickle

    return cloudpickle.loads(base64.b64decode(value))


def _encode(value, serialization):
    if serialization == "json":
        json.dumps(value)  # fail here, inside the call, when it is not JSON
        return value
    import cloudpickle

    return base64.b64encode(cloudpickle.dumps(value)).decode("ascii")


def _call(fn, args, kwargs):
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return result


async def _await(awaitable):
    return await awaitable


def _define(code, name, what):
    namespace = {"__name__": "__runlog__"}
    exec(compile(code or "", "<" + what + "_code>", "exec"), namespace)
    if name not in namespace:
        raise LookupError(what + " '" + name + "' not found in " + what + "_code")
    return namespace[name]


def _materialize(modules):
    """Writes a call's `modules` ({relative path: source}) into a fresh directory put
    first on sys.path; returns it (None when there are none)."""
    if not modules:
        return None
    root = tempfile.mkdtemp(prefix="runlog-modules-")
    for rel, source in modules.items():
        parts = rel.split("/")
        # The engine refuses these already; a second check costs nothing.
        if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError("module path " + repr(rel) + " leaves the module directory")
        path = os.path.join(root, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(source)
    sys.path.insert(0, root)
    importlib.invalidate_caches()
    return root


def _forget(root):
    """Undoes `_materialize`: the next call on this worker must not import what this
    one was sent, nor find it cached in sys.modules."""
    if root is None:
        return
    try:
        sys.path.remove(root)
    except ValueError:
        pass
    prefix = root + os.sep
    for name, module in list(sys.modules.items()):
        if (getattr(module, "__file__", None) or "").startswith(prefix):
            del sys.modules[name]
    importlib.invalidate_caches()
    shutil.rmtree(root, ignore_errors=True)


_instance = None


def _handle(req):
    op = req.get("op")
    root = _materialize(req.get("modules"))
    if op == "construct":
        # The instance's worker is its own: its modules stay for the instance's life.
        return _run(req, op)
    try:
        return _run(req, op)
    finally:
        _forget(root)


def _run(req, op):
    global _instance
    ser = req.get("serialization", "cloudpickle")
    if op == "function":
        fn = _define(req.get("code"), req["name"], "function")
        if not callable(fn):
            raise TypeError("function '" + req["name"] + "' is not callable")
    elif op == "construct":
        cls = _define(req.get("code"), req["name"], "class")
        if not isinstance(cls, type):
            raise TypeError("class '" + req["name"] + "' is not a class")
        args = [_decode(a, ser) for a in req.get("args", [])]
        kwargs = {k: _decode(v, ser) for k, v in req.get("kwargs", {}).items()}
        _instance = _call(cls, args, kwargs)
        return None
    elif op == "method":
        if _instance is None:
            raise RuntimeError("no instance in this worker")
        name = req["name"]
        if not hasattr(_instance, name):
            raise AttributeError("method '" + name + "' not found on " + type(_instance).__name__)
        fn = getattr(_instance, name)
    else:
        raise ValueError("unknown op " + repr(op))
    args = [_decode(a, ser) for a in req.get("args", [])]
    kwargs = {k: _decode(v, ser) for k, v in req.get("kwargs", {}).items()}
    return _encode(_call(fn, args, kwargs), ser)


def _user_traceback(exc):
    # The harness's own frames say nothing to the caller; start at their code.
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    if tb is None:
        # Raised by the harness itself (a name not found in the code): a traceback
        # would only repeat the cause, which the error already says. A syntax error
        # keeps its source line and caret.
        if isinstance(exc, SyntaxError):
            return "".join(traceback.format_exception_only(type(exc), exc))
        return ""
    return "".join(traceback.format_exception(type(exc), exc, tb))


def main():
    global _current
    _send({"ready": True, "python": sys.version.split()[0]})
    for raw in _requests:
        raw = raw.strip()
        if not raw:
            continue
        done = {"success": True}
        try:
            req = json.loads(raw)
            _current = req.get("id")
            _reset()
            done["result"] = _handle(req)
        except BaseException as exc:  # SystemExit from user code is a failed call, not our exit
            if isinstance(exc, KeyboardInterrupt):
                raise
            done = {
                "success": False,
                "error": type(exc).__name__ + ": " + str(exc),
                "traceback": _user_traceback(exc),
            }
        _stdout.flush()
        _stderr.flush()
        _drain.sync()
        call, _current = _current, None
        _mark_stderr(call)
        _send({"done": done, "call": call})


if __name__ == "__main__":
    main()
