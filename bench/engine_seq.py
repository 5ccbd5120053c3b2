#!/usr/bin/env python3
"""Engine end-to-end benchmark: a step printing N lines (`seq`) until its archive is
complete, against the same command writing to a local file, in the same run.

    cargo build --release -p runlog-cli
    python3 bench/engine_seq.py [--lines 2000000] [--runs 3] [--kind seq|text100]

Baselines in the same run: `CMD > file` and `CMD | gzip > file` (each plus fsync).
RUNLOG_BIN picks the binary (to compare two builds side by side); RUNLOG_SERVICE_BIN,
when set, runs the service from another one (to tell the engine's part from the
service's).

The log service and the engine run as two processes (release `runlog service` and
`runlog engine`), so the engine's peak RSS (VmHWM) is its own. "Archive complete" is
`/step` returning plus `/destroy` returning: destroy waits for the step's writer to
upload the archive, and the script checks the archive holds every line.

Each run also records which way its archive came to be (`close`: `built` when the
service built it from its own lines, `uploaded` when the writer sent its spool; from
the service's `runlog_archives_uploaded_total`), the ledger's verdict with its
reasons when incomplete (`GET /stream/sections`), and the service's CPU seconds and
peak RSS (VmHWM, which only grows) after the run.

Every run writes under an account of its own: the service holds an account's
closed streams for `--closed-retention` (5 minutes) within the account's 1 GiB, so
runs in one account would fill it after a few 2 M-line steps, and the later runs
would measure a writer whose live stream was refused (413) and that uploads.
"""
import argparse, json, os, shutil, socket, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("RUNLOG_BIN", os.path.join(ROOT, "target", "release", "runlog"))
SERVICE_BIN = os.environ.get("RUNLOG_SERVICE_BIN", BIN)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(method, url, body=None, token=None, timeout=600):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def wait_up(url, limit=30):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            call("GET", url + "/healthz", timeout=2)
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{url} did not come up")


def peak_rss_kib(pid, field="VmHWM"):
    """Peak resident memory (or `field`, e.g. `VmRSS` for the current one)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def service_cpu_s(pid):
    """User plus system CPU seconds the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def uploads(svc):
    """Archives clients uploaded so far (the rest the service built itself); `None`
    from a service that does not count them."""
    for line in call("GET", svc + "/metrics").decode().splitlines():
        if line.startswith("runlog_archives_uploaded_total "):
            return int(line.split()[1])
    return None


def ledger_verdict(svc, account, key, token):
    """`complete`, or the ledger's reasons when it is not."""
    answer = json.loads(call("GET", f"{svc}/stream/sections?accountID={account}&key={key}", token=token))
    ledger = answer.get("ledger") or {}
    if ledger.get("complete"):
        return "complete"
    return "incomplete " + json.dumps(ledger.get("reasons"))


def command(kind, n):
    """The step's command: `seq 1 N`, or N lines of ~100 bytes (`--kind text100`)."""
    if kind == "seq":
        return ["seq", "1", str(n)]
    prog = ('BEGIN{for(i=1;i<=%d;i++) printf "%%08d compiling module_%%d (%%016x) took %%d ms, '
            'target/debug/deps/lib%%x.rlib ok\\n", i, i%%977, i*2654435761, i%%3000, i*40503}' % n)
    return ["awk", prog]


def baseline(cmd, dir, gzip=False):
    """`CMD > file` (or `CMD | gzip > file`) plus fsync."""
    path = os.path.join(dir, "base.out")
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        if gzip:
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE)
            subprocess.run(["gzip"], stdin=p.stdout, stdout=f, check=True)
            p.stdout.close()
            p.wait()
        else:
            subprocess.run(cmd, stdout=f, check=True)
        f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--kind", choices=["seq", "text100"], default="seq")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="runlog-bench-")
    secret = "bench-secret-" + str(os.getpid())
    sp, ep = free_port(), free_port()
    # BENCH_LOG_DIR keeps both processes' logs at debug level there (where a close's
    # time goes: the service's "stream closed" event, the writer's "closed").
    log_dir = os.environ.get("BENCH_LOG_DIR")
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
    def log(name):
        return open(os.path.join(log_dir, name + ".log"), "w") if log_dir else subprocess.DEVNULL
    level = "warn,runlog_service=debug,livelog=debug" if log_dir else "warn"
    service = subprocess.Popen([SERVICE_BIN, "service", "--addr", f"127.0.0.1:{sp}", "--data-dir", os.path.join(work, "svc"),
                                "--admin-secret", secret], stderr=log("service"),
                               env={**os.environ, "RUNLOG_LOG": level})
    engine = subprocess.Popen([BIN, "engine", "--addr", f"127.0.0.1:{ep}", "--data-dir", os.path.join(work, "engine")],
                              stderr=log("engine"), env={**os.environ, "RUNLOG_LOG": level})
    try:
        svc, eng = f"http://127.0.0.1:{sp}", f"http://127.0.0.1:{ep}"
        wait_up(svc)
        wait_up(eng)
        rss_before = peak_rss_kib(engine.pid)
        results = []
        for run in range(args.runs):
            cmd = command(args.kind, args.lines)
            base = baseline(cmd, work)
            base_gz = baseline(cmd, work, gzip=True)
            account, key = f"bench{run}", f"bench/run-{run}"
            token = subprocess.run([BIN, "token", "--account", account, "--scope", "write", "--admin-secret", secret],
                                   capture_output=True, text=True, check=True).stdout.strip()
            call("POST", eng + "/setup", {"le_log_key": key + ".engine", "log_config": {
                "url": svc, "account_id": account, "token": token, "indirect_upload": True}})
            uploaded_before, cpu_before = uploads(svc), service_cpu_s(service.pid)
            t0 = time.perf_counter()
            step = json.loads(call("POST", eng + "/step", {"id": "seq", "command": cmd,
                                                           "log_key": key}))
            t_step = time.perf_counter() - t0
            destroyed = json.loads(call("POST", eng + "/destroy", {}))
            t_archive = time.perf_counter() - t0
            report = destroyed["streams"][0]
            assert step["exit_code"] == 0, step
            assert report["archived"] and report["lines"] == args.lines, report
            archive = call("GET", f"{svc}/blob?accountID={account}&key={key}", token=token)
            rows = archive.count(b"\n")
            assert rows == args.lines, f"archive holds {rows} lines"
            uploaded_after = uploads(svc)
            close = "?" if uploaded_after is None else "uploaded" if uploaded_after > uploaded_before else "built"
            cpu = service_cpu_s(service.pid) - cpu_before
            verdict = ledger_verdict(svc, account, key, token)
            results.append((base, t_step, t_archive))
            print(f"run {run}: > file {base:.3f}s | | gzip > file {base_gz:.3f}s | step answered {t_step:.3f}s | "
                  f"archive complete {t_archive:.3f}s | vs gzip {t_archive / base_gz:.2f}x | "
                  f"{args.lines / t_archive / 1e6:.2f} M lines/s | close {close} | ledger {verdict} | "
                  f"service CPU {cpu:.2f}s, peak RSS {peak_rss_kib(service.pid) / 1024:.0f} MiB "
                  f"(now {peak_rss_kib(service.pid, 'VmRSS') / 1024:.0f}) | "
                  f"retries {report['retries']}", flush=True)
        best = min(results, key=lambda r: r[2])
        print(f"\nlines: {args.lines}")
        print(f"best of {args.runs}: local file {best[0]:.3f}s, step output {best[1]:.3f}s, archive complete "
              f"{best[2]:.3f}s -> {best[2] / best[0]:.1f}x the local file, "
              f"{args.lines / best[2] / 1e6:.2f} M lines/s end to end")
        print(f"engine peak RSS: {peak_rss_kib(engine.pid) / 1024:.1f} MiB (idle {rss_before / 1024:.1f} MiB)")
    finally:
        for p in (engine, service):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
