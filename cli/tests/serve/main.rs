//! `bitnet serve` as clients see it: HTTP on a loopback port, the official `openai` Python
//! client, replicas behind HAProxy, and a short load test. One test binary for all of them.

#[path = "../common.rs"]
mod common;
#[path = "../../../tests/gguf_py/python.rs"]
mod python;

mod api;
mod batching;
mod deploy;
mod load;
mod openai_client;
mod ops;
mod replicas;
mod server;
