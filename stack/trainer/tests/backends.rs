//! Backend selection on the real binary: `--comm nccl` and `--model torchscript` fail fast with
//! a message naming the cargo feature they need when the build lacks it, and (feature `cuda`,
//! no GPU) `--comm nccl` ends with an `exit` event saying CUDA/NCCL is unavailable.

mod common;

use std::process::{Command, Output};

/// Runs the binary to completion with `envs` set, failing the test if it takes over `secs`.
fn run(args: &[&str], envs: &[(&str, &str)], secs: u64) -> Output {
    let mut cmd = Command::new(common::BIN);
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .env_remove("TRAINER_COMM")
        .env_remove("TRAINER_CUDA_DEVICE")
        .envs(envs.iter().copied());
    common::output_within(cmd, secs)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[cfg(not(feature = "cuda"))]
#[test]
fn comm_nccl_without_the_cuda_feature_names_the_feature_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run_dir = dir.path().to_str().expect("utf-8 path");
    // An unreachable rendezvous: the check must come before any network step.
    let args = [
        "worker",
        "--run-dir",
        run_dir,
        "--rendezvous",
        "127.0.0.1:1",
    ];
    for (extra, envs) in [
        (vec!["--comm", "nccl"], vec![]),
        (vec![], vec![("TRAINER_COMM", "nccl")]),
    ] {
        let mut a = args.to_vec();
        a.extend(extra);
        let out = run(&a, &envs, 10);
        let msg = text(&out);
        assert_eq!(out.status.code(), Some(2), "{msg}");
        assert!(msg.contains("--features cuda"), "{msg}");
        assert!(msg.contains("--comm nccl"), "{msg}");
    }
}

#[cfg(not(feature = "tch"))]
#[test]
fn model_torchscript_without_the_tch_feature_names_the_feature_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run_dir = dir.path().to_str().expect("utf-8 path");
    let out = run(
        &[
            "worker",
            "--run-dir",
            run_dir,
            "--rendezvous",
            "127.0.0.1:1",
            "--model",
            "torchscript",
            "--torchscript",
            "/nonexistent/model.pt",
        ],
        &[],
        10,
    );
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(2), "{msg}");
    assert!(msg.contains("--features tch"), "{msg}");
    assert!(msg.contains("--model torchscript"), "{msg}");
}

#[test]
fn model_torchscript_without_a_path_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run_dir = dir.path().to_str().expect("utf-8 path");
    let out = run(
        &["worker", "--run-dir", run_dir, "--model", "torchscript"],
        &[],
        10,
    );
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(2), "{msg}");
    assert!(msg.contains("--torchscript"), "{msg}");
}

/// With `cuda` on a machine without a GPU: the ring forms, the NCCL bootstrap fails, and the
/// worker exits 1 (not a panic's 101) with an `exit` event explaining why.
#[cfg(feature = "cuda")]
#[test]
fn comm_nccl_without_a_gpu_exits_1_with_a_clear_reason() {
    if std::path::Path::new("/dev/nvidiactl").exists() {
        return; // a GPU machine: NCCL may well work here
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let run_dir = dir.path().to_str().expect("utf-8 path");
    let out = run(
        &[
            "launch",
            "--nproc",
            "1",
            "--",
            "--run-dir",
            run_dir,
            "--comm",
            "nccl",
            "--steps",
            "2",
            "--mlp-hidden",
            "16",
        ],
        &[],
        60,
    );
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    let exit = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "exit" && v["code"] == 1)
        .unwrap_or_else(|| panic!("no exit event with code 1 in {msg}"));
    let reason = exit["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("CUDA/NCCL unavailable"), "{reason}");
    // cudarc panics when it cannot load libnccl; nccl.rs catches that panic (the default hook
    // still prints it on stderr), so the worker exits 1, not 101.
}
