//! FunctionRequest / FunctionResponse: the remote function-execution protocol of
//! `POST /execute` and `POST /runsync` on the engine.
