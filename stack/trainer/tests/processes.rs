//! Behaviour across real processes and sockets: `trainer launch`, a worker SIGKILLed mid-run,
//! resume after the whole job is killed, and the control endpoint's fault hooks.

mod common;

use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;
use wire::trainer::{ActiveFaults, FaultRequest, GpuFaultKind};

#[test]
fn sigkilled_worker_leaves_two_survivors_that_restore_and_finish_with_every_step_accounted() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let steps = 2500;
    let every = 50;
    let mut job = launch(3, 2, &small_mlp(dir.path(), steps, every));
    // Victim: rank 1, once the job is well past its first checkpoint.
    let start = job.wait_for(30, "rank 1 start", |v| is(v, "start") && v["rank"] == 1);
    job.wait_for(60, "step 300", |v| {
        is(v, "step") && v["step"].as_u64().is_some_and(|s| s >= 300)
    });
    kill(
        start["pid"].as_u64().expect("pid"),
        nix::sys::signal::Signal::SIGKILL,
    );
    let code = job.wait_exit(120);
    assert_eq!(code, 0, "the job finishes despite the loss");
    let events = job.events();

    let lost = events
        .iter()
        .find(|v| is(v, "fault") && v["kind"] == "worker_lost")
        .expect("coordinator detected the loss");
    assert_eq!(lost["reason"], "connection closed");
    let restores: Vec<&Value> = events
        .iter()
        .filter(|v| is(v, "restore") && v["epoch"] == 2)
        .collect();
    assert_eq!(restores.len(), 2, "both survivors restored: {restores:?}");
    for r in &restores {
        let lost_steps = r["lost_steps"].as_u64().expect("lost_steps");
        assert!(
            lost_steps <= every,
            "lost work ≤ one checkpoint interval: {r}"
        );
        assert_eq!(r["step"].as_u64().expect("step") % every, 0);
    }
    let recovered: Vec<&Value> = events.iter().filter(|v| is(v, "recovered")).collect();
    assert_eq!(recovered.len(), 2);
    for r in &recovered {
        assert_eq!(r["world"], 2);
    }
    // No step silently lost: the two survivors ran every step index 0..steps, the ones after
    // the restore point at world 2.
    for rank in [0, 1] {
        let mut seen = vec![false; steps as usize];
        for v in events.iter().filter(|v| is(v, "step")) {
            let ep = v["epoch"].as_u64().expect("epoch");
            let r = v["rank"].as_u64().expect("rank");
            // Survivors keep ranks 0 and 1 in epoch 2 (rank hints 0 and 2 → 0 and 1).
            if (ep == 2 && r == rank) || (ep == 1 && r == if rank == 0 { 0 } else { 2 }) {
                seen[v["step"].as_u64().expect("step") as usize] = true;
            }
        }
        let missing: Vec<usize> = (0..steps as usize).filter(|i| !seen[*i]).collect();
        assert!(
            missing.is_empty(),
            "rank {rank} never ran steps {missing:?}"
        );
    }
    let final_weights = dir.path().join("final/model.safetensors");
    models::mlp::Mlp::load(&final_weights).expect("published weights load in the server's loader");

    // Gradients went through shared memory in both epochs (`--comm auto` on one host), the
    // SIGKILL reached the waiting survivors, and no segment file outlived its bootstrap.
    for (epoch, world) in [(1, 3), (2, 2)] {
        let comms: Vec<&Value> = events
            .iter()
            .filter(|v| is(v, "comm") && v["epoch"] == epoch)
            .collect();
        assert_eq!(comms.len(), world, "a comm event per rank: {comms:?}");
        assert!(comms.iter().all(|v| v["transport"] == "shm"), "{comms:?}");
    }
    let data_port = events
        .iter()
        .find(|v| is(v, "start") && v["rank"] == 0)
        .and_then(|v| v["data_addr"].as_str())
        .and_then(|a| a.rsplit(':').next())
        .expect("rank 0 data address")
        .to_string();
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("faultline-trainer-") && n.contains(&data_port))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "segments left behind: {left:?}");
}

/// With no usable shared memory (here: `TRAINER_SHM_DIR` names a missing directory),
/// `--comm auto` trains over the TCP ring and says why; `--comm shm` exits with the reason.
#[test]
fn without_shared_memory_auto_falls_back_to_tcp_and_shm_exits_saying_why() {
    let _serial = serial();
    let missing = "/nonexistent/faultline-shm";
    for comm in ["auto", "shm"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args = small_mlp(dir.path(), 20, 0);
        args.extend(["--comm".to_string(), comm.to_string()]);
        let env = [("TRAINER_SHM_DIR", missing)];
        let mut job = launch_with_env(2, 2, RELAXED_HEARTBEAT_S, &args, &env);
        let code = job.wait_exit(120);
        let events = job.events();
        if comm == "auto" {
            assert_eq!(code, 0, "auto trains anyway");
            let comms: Vec<&Value> = events.iter().filter(|v| is(v, "comm")).collect();
            assert_eq!(comms.len(), 2, "{comms:?}");
            for c in comms {
                assert_eq!(c["transport"], "tcp", "{c}");
                let why = c["fallback"].as_str().expect("a fallback reason");
                assert!(why.contains(missing), "{why}");
            }
        } else {
            assert_ne!(code, 0, "--comm shm cannot run");
            let exits: Vec<&Value> = events
                .iter()
                .filter(|v| is(v, "exit") && v["code"] == 1)
                .collect();
            assert_eq!(exits.len(), 2, "both workers exit 1: {events:?}");
            for e in exits {
                let reason = e["reason"].as_str().expect("reason");
                assert!(
                    reason.starts_with("--comm shm:") && reason.contains(missing),
                    "{reason}"
                );
            }
        }
    }
}

#[test]
fn comm_tcp_keeps_gradients_on_the_ring_and_reaches_the_same_loss_as_shared_memory() {
    let _serial = serial();
    let mut losses = Vec::new();
    for comm in ["tcp", "shm"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args = small_mlp(dir.path(), 60, 0);
        args.extend(["--comm".to_string(), comm.to_string()]);
        let mut job = launch(2, 2, &args);
        assert_eq!(job.wait_exit(120), 0, "--comm {comm}");
        let events = job.events();
        let comms: Vec<&Value> = events.iter().filter(|v| is(v, "comm")).collect();
        assert_eq!(comms.len(), 2, "{comms:?}");
        assert!(comms.iter().all(|v| v["transport"] == comm), "{comms:?}");
        let last = events
            .iter()
            .rfind(|v| is(v, "step") && v["rank"] == 0)
            .expect("steps");
        losses.push(last["loss"].as_f64().expect("loss"));
    }
    // Same data, seed and world: only the order of float additions differs.
    assert!(
        (losses[0] - losses[1]).abs() <= 1e-3 * losses[0].abs().max(1.0),
        "tcp {} vs shm {}",
        losses[0],
        losses[1]
    );
}

#[test]
fn a_job_killed_and_resumed_from_its_checkpoint_ends_with_bitwise_identical_weights() {
    let _serial = serial();
    let steps = 300;
    let every = 50;
    let a = tempfile::tempdir().expect("tempdir");
    let mut job = launch(2, 2, &small_mlp(a.path(), steps, every));
    assert_eq!(job.wait_exit(120), 0);

    let b = tempfile::tempdir().expect("tempdir");
    let mut job = launch(2, 2, &small_mlp(b.path(), steps, every));
    let ckpt = job.wait_for(60, "checkpoint at step ≥ 150", |v| {
        is(v, "checkpoint") && v["step"].as_u64().is_some_and(|s| s >= 150)
    });
    // Kill every worker at once (and the launcher): the job dies mid-run.
    for v in job.events().iter().filter(|v| is(v, "start")) {
        kill(
            v["pid"].as_u64().expect("pid"),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = job.child.kill();
    let _ = job.wait_exit(30);
    assert!(!b.path().join("final/model.safetensors").exists());

    let mut job = launch(2, 2, &small_mlp(b.path(), steps, every));
    assert_eq!(job.wait_exit(120), 0);
    let restore = job
        .events()
        .into_iter()
        .find(|v| is(v, "restore"))
        .expect("resumed from a checkpoint");
    assert!(restore["step"].as_u64().expect("step") >= ckpt["step"].as_u64().expect("step"));

    let wa = std::fs::read(a.path().join("final/model.safetensors")).expect("a");
    let wb = std::fs::read(b.path().join("final/model.safetensors")).expect("b");
    assert!(
        wa == wb,
        "resumed weights differ from the uninterrupted run"
    );
}
#[test]
fn control_endpoint_injects_ecc_throttle_and_a_lost_gpu_that_exits_with_code_3() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let _rdzv = Proc::spawn(&[
        "rendezvous",
        "--listen",
        &listen,
        "--max-workers",
        "1",
        "--heartbeat-timeout-s",
        RELAXED_HEARTBEAT_S,
    ]);
    let mut args = vec!["worker".to_string(), "--rendezvous".into(), listen.clone()];
    args.extend(small_mlp(dir.path(), 1_000_000, 0));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut worker = Proc::spawn(&refs);
    let start = worker.wait_for(30, "start", |v| is(v, "start"));
    let addr = start["control"].as_str().expect("control addr").to_string();
    assert_eq!(http(&addr, "GET", "/healthz", "").0, 200);
    worker.wait_for(30, "first step", |v| is(v, "step"));
    assert_eq!(http(&addr, "GET", "/readyz", "").0, 200);

    let (code, body) = http(&addr, "POST", "/faults", r#"{"kind":"gpu.melt"}"#);
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("gpu.ecc"),
        "the error lists the kinds: {body}"
    );
    // A factor far past the bound is refused naming the field; the worker keeps training
    // (it used to die in the throttle arithmetic, Duration overflow).
    let (code, body) = http(
        &addr,
        "POST",
        "/faults",
        r#"{"kind":"gpu.throttle","factor":1e300}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("factor") && body.contains("1..=1000"),
        "the error names the field and its range: {body}"
    );

    assert_eq!(
        http(
            &addr,
            "POST",
            "/faults",
            r#"{"kind":"gpu.ecc","mode":"nan"}"#
        )
        .0,
        200
    );
    worker.wait_for(30, "skipped step", |v| {
        is(v, "step") && v["skipped"] == true
    });
    assert_eq!(
        http(
            &addr,
            "POST",
            "/faults",
            r#"{"kind":"gpu.ecc","mode":"bitflip"}"#
        )
        .0,
        200
    );
    eventually(
        Duration::from_secs(30),
        "the bit flip is counted as silent",
        || (status(&addr).device.ecc_silent_total == 1).then_some(()),
    );
    let st = status(&addr);
    assert_eq!(st.device.ecc_detected_total, 1);
    assert_eq!(st.progress.steps_skipped_total, 1);

    // The harness's typed body, and the typed answer.
    let throttle = serde_json::to_string(&FaultRequest::Throttle { factor: 3.0 }).expect("json");
    let (code, body) = http(&addr, "POST", "/faults", &throttle);
    assert_eq!(code, 200, "{body}");
    let active: ActiveFaults = serde_json::from_str(&body).expect("an ActiveFaults answer");
    assert_eq!(active.active, vec![GpuFaultKind::Throttle]);
    assert_eq!(status(&addr).device.faults_active, active.active);
    worker.wait_for(30, "throttled step", |v| {
        is(v, "step") && v["throttle_s"].as_f64().is_some_and(|t| t > 0.0)
    });
    assert_eq!(http(&addr, "DELETE", "/faults/gpu.throttle", "").0, 200);
    assert_eq!(http(&addr, "DELETE", "/faults/gpu.nope", "").0, 404);

    assert_eq!(
        http(&addr, "POST", "/faults", r#"{"kind":"gpu.lost"}"#).0,
        200
    );
    assert_eq!(worker.wait_exit(30), trainer::exit::GPU_LOST);
    let exit = worker.wait_for(5, "exit event", |v| is(v, "exit"));
    assert_eq!(exit["code"], 3);
}

#[test]
fn a_sigstopped_worker_is_detected_by_heartbeat_and_evicted_when_it_resumes() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut job = launch_with_heartbeat(3, 2, "1", &small_mlp(dir.path(), 2500, 50));
    let start = job.wait_for(30, "rank 2 start", |v| is(v, "start") && v["rank"] == 2);
    job.wait_for(60, "step 200", |v| {
        is(v, "step") && v["step"].as_u64().is_some_and(|s| s >= 200)
    });
    let pid = start["pid"].as_u64().expect("pid");
    let stopped_at = trainer::events::unix_s();
    kill(pid, nix::sys::signal::Signal::SIGSTOP);
    let lost = job.wait_for(10, "heartbeat timeout", |v| {
        is(v, "fault") && v["kind"] == "worker_lost"
    });
    assert_eq!(lost["reason"], "heartbeat timeout");
    let detect_s = lost["detected_unix_s"].as_f64().expect("detected") - stopped_at;
    // Behaviour, not a timing figure (that is measured in docs/BENCHMARKS.md): the 1 s
    // heartbeat timeout, not the end of the job, found the stopped worker. The bound is
    // loose so a noisy CI machine cannot fail it.
    assert!(detect_s <= 10.0, "detected after {detect_s:.2} s");
    job.wait_for(30, "recovered at world 2", |v| {
        is(v, "recovered") && v["world"] == 2
    });
    kill(pid, nix::sys::signal::Signal::SIGCONT);
    assert_eq!(job.wait_exit(120), 0, "the survivors finish");
    let evicted = job
        .events()
        .into_iter()
        .find(|v| is(v, "exit") && v["code"] == trainer::exit::RENDEZVOUS)
        .expect("the resumed worker learns it was evicted and exits");
    assert!(evicted["reason"]
        .as_str()
        .is_some_and(|r| r.contains("rendezvous")));
}
fn worker(rdzv: &str, rank: usize, run_dir: &Path, steps: u64) -> Proc {
    let mut args = vec![
        "worker".to_string(),
        "--rendezvous".into(),
        rdzv.into(),
        "--rank".into(),
        rank.to_string(),
    ];
    args.extend(small_mlp(run_dir, steps, 50));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::spawn(&refs)
}

#[test]
fn a_replacement_that_joins_within_the_timeout_restores_the_full_world() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let rdzv_addr = free_addr();
    let rdzv = Proc::spawn(&[
        "rendezvous",
        "--listen",
        &rdzv_addr,
        "--min-workers",
        "2",
        "--max-workers",
        "3",
        "--replace-timeout-s",
        "30",
        "--heartbeat-timeout-s",
        RELAXED_HEARTBEAT_S,
        "--exit-when-done",
    ]);
    let mut workers: Vec<Proc> = (0..3)
        .map(|r| worker(&rdzv_addr, r, dir.path(), 2500))
        .collect();
    workers[0].wait_for(60, "step 200", |v| {
        is(v, "step") && v["step"].as_u64().is_some_and(|s| s >= 200)
    });
    let victim = workers.remove(1);
    drop(victim); // SIGKILL (Child::kill) and reap
    rdzv.wait_for(10, "loss detected", |v| {
        is(v, "fault") && v["kind"] == "worker_lost"
    });
    let replacement = worker(&rdzv_addr, 1, dir.path(), 2500);
    let epoch2 = rdzv.wait_for(30, "epoch 2", |v| is(v, "rendezvous") && v["epoch"] == 2);
    assert_eq!(epoch2["world"], 3, "the replacement was admitted: {epoch2}");
    let restore = replacement.wait_for(30, "replacement restores", |v| is(v, "restore"));
    assert!(
        restore["step"].as_u64().expect("step") > 0,
        "it resumes from the shared checkpoint"
    );
    workers.push(replacement);
    for w in &mut workers {
        assert_eq!(w.wait_exit(120), 0);
    }
}

#[test]
fn interrupting_launch_stops_every_worker_it_started() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut job = launch(2, 2, &small_mlp(dir.path(), 1_000_000, 0));
    job.wait_for(30, "training", |v| is(v, "step"));
    let pids: Vec<u64> = job
        .events()
        .iter()
        .filter(|v| is(v, "start"))
        .map(|v| v["pid"].as_u64().expect("pid"))
        .collect();
    assert_eq!(pids.len(), 2);
    kill(u64::from(job.child.id()), nix::sys::signal::Signal::SIGINT);
    assert_eq!(job.wait_exit(30), trainer::exit::INTERRUPTED);
    for pid in pids {
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok();
        assert!(!alive, "worker {pid} outlived the launcher");
    }
}

/// Every seconds flag refuses what `Duration` cannot hold (or what makes no sense) at parse
/// time: exit 2, naming the flag and its range, instead of a panic later.
#[test]
fn out_of_range_seconds_flags_exit_2_naming_the_flag_and_the_range() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let run_dir = dir.path().to_str().expect("utf-8 path");
    let rendezvous = [
        "rendezvous",
        "--listen",
        "127.0.0.1:0",
        "--max-workers",
        "1",
    ];
    let launch = ["launch", "--nproc", "1"];
    let job = ["--", "--run-dir", run_dir, "--steps", "1"];
    let cases: [(&[&str], &str, &str, &str); 6] = [
        (&rendezvous, "--replace-timeout-s", "NaN", "0..=3600"),
        (&rendezvous, "--startup-timeout-s", "-1", "0..=3600"),
        (&rendezvous, "--heartbeat-timeout-s", "1e300", "0..=3600"),
        (
            &rendezvous,
            "--heartbeat-timeout-s",
            "0",
            "above 0 and at most 3600",
        ),
        (&launch, "--replace-timeout-s", "inf", "0..=3600"),
        (&launch, "--heartbeat-timeout-s", "-5", "0..=3600"),
    ];
    for (command, flag, value, range) in cases {
        let mut args = command.to_vec();
        args.extend([flag, value]);
        if command[0] == "launch" {
            args.extend(job);
        }
        let (code, stderr) = run_to_exit(&args, &[], 60);
        assert_eq!(code, trainer::exit::USAGE, "{args:?}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains(value) && stderr.contains(range),
            "{args:?}: the message names the flag, the value and the range: {stderr}"
        );
    }
}

/// A peer that sends 1 MiB without a newline is dropped at the 64 KiB line bound; the
/// rendezvous stays up and runs a job for a real worker afterwards.
#[test]
fn a_rendezvous_peer_sending_a_line_without_end_is_dropped_and_a_worker_is_served_after() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let rdzv_addr = free_addr();
    let mut rdzv = Proc::spawn(&[
        "rendezvous",
        "--listen",
        &rdzv_addr,
        "--max-workers",
        "1",
        "--heartbeat-timeout-s",
        RELAXED_HEARTBEAT_S,
        "--exit-when-done",
    ]);
    let mut flood = connect(&rdzv_addr, 30);
    flood
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    // The rendezvous may hang up before all of it is sent: that is the point.
    let _ = flood.write_all(&vec![b'x'; 1 << 20]);
    let mut byte = [0u8; 1];
    match flood.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the rendezvous kept reading the endless line: {other:?}"),
    }
    assert!(
        matches!(rdzv.child.try_wait(), Ok(None)),
        "the rendezvous is still up"
    );
    let mut w = worker(&rdzv_addr, 0, dir.path(), 20);
    assert_eq!(w.wait_exit(120), 0, "a worker trains through it afterwards");
    assert_eq!(rdzv.wait_exit(30), 0, "and it exits once the job is done");
}

/// The worker side of the same bound: a rendezvous that sends a line without end is left,
/// and the worker exits 5 (rendezvous lost) saying why.
#[test]
fn a_worker_whose_rendezvous_sends_a_line_without_end_exits_5_naming_the_bound() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr").to_string();
    let mut w = worker(&addr, 0, dir.path(), 20);
    let (mut conn, _) = eventually(
        Duration::from_secs(60),
        "the worker connects",
        || match listener.accept() {
            Ok(accepted) => Some(accepted),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            Err(e) => panic!("accept: {e}"),
        },
    );
    conn.set_nonblocking(false).expect("blocking");
    let _ = conn.write_all(&vec![b'x'; 1 << 20]);
    assert_eq!(w.wait_exit(60), trainer::exit::RENDEZVOUS);
    let exit = w.wait_for(5, "exit event", |v| is(v, "exit"));
    let reason = exit["reason"].as_str().expect("reason");
    assert!(reason.contains("65536 bytes without a newline"), "{reason}");
}

/// `trainer launch` SIGKILLed (no chance to stop anything) still takes its rendezvous and
/// workers with it: they asked the kernel to be killed with their parent.
#[test]
fn a_sigkilled_launcher_takes_its_rendezvous_and_workers_with_it() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut job = launch(2, 2, &small_mlp(dir.path(), 1_000_000, 0));
    job.wait_for(60, "training", |v| is(v, "step"));
    let launcher = i32::try_from(job.child.id()).expect("pid");
    let children = children_of(launcher);
    let _cleanup = KillOnDrop(children.clone());
    let workers: Vec<i32> = job
        .events()
        .iter()
        .filter(|v| is(v, "start"))
        .map(|v| v["pid"].as_i64().expect("pid") as i32)
        .collect();
    assert_eq!(workers.len(), 2);
    assert_eq!(
        children.len(),
        3,
        "a rendezvous and 2 workers: {children:?}"
    );
    assert!(workers.iter().all(|w| children.contains(w)), "{workers:?}");
    job.child.kill().expect("SIGKILL the launcher");
    job.child.wait().expect("reap the launcher");
    let what = format!("children {children:?} die with the SIGKILLed launcher");
    eventually(Duration::from_secs(30), &what, || {
        (!children.iter().any(|p| trainer_alive(*p))).then_some(())
    });
}

/// A child started by a launcher that has died already (its pid in `TRAINER_PARENT_PID` is
/// not the parent) refuses to start: nothing would ever stop it.
#[test]
fn a_child_whose_launcher_has_already_exited_refuses_to_start() {
    let _serial = serial();
    let mut gone = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    gone.wait().expect("reap");
    let pid = gone.id().to_string();
    let (code, stderr) = run_to_exit(
        &[
            "rendezvous",
            "--listen",
            "127.0.0.1:0",
            "--max-workers",
            "1",
        ],
        &[(trainer::launch::PARENT_PID_ENV, &pid)],
        60,
    );
    assert_eq!(code, trainer::exit::ERROR, "{stderr}");
    assert!(
        stderr.contains(&format!("launcher (pid {pid}) has already exited")),
        "{stderr}"
    );
}
