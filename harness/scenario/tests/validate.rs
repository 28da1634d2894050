//! Every validation rule on a small bad file: the located error text is snapshotted
//! (`tests/snapshots/`), so a change in wording or position shows up in review.
//! Regenerate after an intended change with `INSTA_UPDATE=always cargo test -p scenario`
//! (or `cargo insta review`).

use std::time::Duration;

use scenario::{parse, EccMode, FaultKind, LoadMode, RequestSpec, ScenarioError, Slo};

/// A valid open-loop scenario; tests edit it with [`edit`].
const BASE: &str = r#"description = "base scenario for validation tests"

[[components]]
name = "server"
kind = "server"
replicas = 2

[workload]
target = "server"
rate_per_s = 100
warmup = "2s"
duration = "10s"
requests = [{ kind = "infer", model = "mlp" }]

[[faults]]
id = "kill"
at = "5s"
kind = "process.kill"
target = "server/0"

[[slo]]
kind = "latency"
phase = "steady"
percentile = 99
latency_ms_max = 250
"#;

/// BASE with each `(from, to)` replaced once (each `from` must occur) and `extra` appended.
fn edit(replacements: &[(&str, &str)], extra: &str) -> String {
    let mut src = BASE.to_owned();
    for (from, to) in replacements {
        assert!(src.contains(from), "test setup: {from:?} is not in BASE");
        src = src.replacen(from, to, 1);
    }
    src.push_str(extra);
    src
}

/// The error text of a source that must not parse.
fn errors(src: &str) -> String {
    match parse(src, "bad.toml") {
        Ok(_) => panic!("expected a validation error for:\n{src}"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn base_scenario_is_valid_and_gets_defaults() {
    let s = parse(BASE, "base.toml").expect("BASE is valid");
    assert_eq!(s.seed, 1);
    assert_eq!(s.workload.mode, LoadMode::OpenLoop);
    assert_eq!(s.workload.connections, 32);
    assert_eq!(s.workload.timeout, Duration::from_secs(2));
    assert_eq!(s.components[0].readiness.path, "/readyz");
    assert_eq!(s.faults[0].kind, FaultKind::ProcessKill);
    assert!(matches!(s.workload.requests[0], RequestSpec::Infer { weight, .. } if weight == 1.0));
    assert_eq!(s.horizon(), Duration::from_secs(12));
}

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let src = edit(
        &[
            ("replicas = 2", "replicas = 0"),
            ("target = \"server\"\nrate", "target = \"sever\"\nrate"),
            ("percentile = 99", "percentile = 0"),
        ],
        "",
    );
    let err = parse(&src, "bad.toml").expect_err("three problems");
    assert_eq!(err.diagnostics().len(), 3, "{err}");
    insta::assert_snapshot!(err.to_string());
}

#[test]
fn missing_file_names_the_path() {
    let err = scenario::load(std::path::Path::new("no/such/scenario.toml"))
        .expect_err("file does not exist");
    assert!(matches!(err, ScenarioError::Io { .. }));
    assert!(err
        .to_string()
        .starts_with("no/such/scenario.toml: cannot read scenario file"));
}

// --- TOML syntax and serde errors -------------------------------------------------------

#[test]
fn syntax_error_is_located() {
    insta::assert_snapshot!(errors(&edit(&[("rate_per_s = 100", "rate_per_s = ")], "")));
}

#[test]
fn unknown_field_points_at_the_key() {
    insta::assert_snapshot!(errors(&edit(
        &[("model = \"mlp\"", "model = \"mlp\", wieght = 2")],
        ""
    )));
}

#[test]
fn unknown_top_level_field_is_rejected() {
    insta::assert_snapshot!(errors(&format!("seeed = 3\n{BASE}")));
}

#[test]
fn unknown_enum_value_lists_the_choices() {
    insta::assert_snapshot!(errors(&edit(
        &[("kind = \"process.kill\"", "kind = \"process.kil\"")],
        ""
    )));
}

#[test]
fn missing_required_field_names_it() {
    insta::assert_snapshot!(errors(&edit(&[("duration = \"10s\"\n", "")], "")));
}

#[test]
fn bad_duration_shows_the_format() {
    insta::assert_snapshot!(errors(&edit(
        &[("warmup = \"2s\"", "warmup = \"2 secs later\"")],
        ""
    )));
}

#[test]
fn wrong_type_says_what_was_expected() {
    insta::assert_snapshot!(errors(&edit(
        &[("rate_per_s = 100", "rate_per_s = \"fast\"")],
        ""
    )));
}

// --- components ----------------------------------------------------------------------

#[test]
fn at_least_one_component() {
    let src = r#"
components = []
[workload]
target = "server"
rate_per_s = 10
duration = "1s"
requests = [{ kind = "infer", model = "mlp" }]
"#;
    insta::assert_snapshot!(errors(src));
}

#[test]
fn component_names_are_lowercase_and_unique() {
    let extra = "\n[[components]]\nname = \"server\"\nkind = \"server\"\n\n[[components]]\nname = \"Big_Server\"\nkind = \"server\"\n";
    insta::assert_snapshot!(errors(&edit(&[], extra)));
}

#[test]
fn replicas_at_least_one() {
    insta::assert_snapshot!(errors(&edit(&[("replicas = 2", "replicas = 0")], "")));
}

#[test]
fn readiness_path_starts_with_slash() {
    insta::assert_snapshot!(errors(&edit(
        &[(
            "replicas = 2",
            "replicas = 2\nreadiness = { path = \"readyz\", timeout = \"0s\" }"
        )],
        ""
    )));
}

// --- workload ------------------------------------------------------------------------

#[test]
fn workload_target_names_a_component() {
    insta::assert_snapshot!(errors(&edit(
        &[("target = \"server\"\nrate", "target = \"sever\"\nrate")],
        ""
    )));
}

#[test]
fn open_loop_needs_a_rate() {
    insta::assert_snapshot!(errors(&edit(&[("rate_per_s = 100\n", "")], "")));
}

#[test]
fn rate_must_be_positive_and_finite() {
    insta::assert_snapshot!(errors(&edit(
        &[("rate_per_s = 100", "rate_per_s = inf")],
        ""
    )));
    insta::assert_snapshot!(errors(&edit(
        &[("rate_per_s = 100", "rate_per_s = -5")],
        ""
    )));
}

#[test]
fn closed_loop_rejects_a_rate() {
    insta::assert_snapshot!(errors(&edit(
        &[(
            "rate_per_s = 100",
            "mode = \"closed-loop\"\nrate_per_s = 100"
        )],
        ""
    )));
}

#[test]
fn duration_and_timeout_above_zero() {
    insta::assert_snapshot!(errors(&edit(
        &[("duration = \"10s\"", "duration = \"0s\"\ntimeout = \"0s\"")],
        ""
    )));
}

#[test]
fn connections_at_least_one() {
    insta::assert_snapshot!(errors(&edit(
        &[("warmup = \"2s\"", "warmup = \"2s\"\nconnections = 0")],
        ""
    )));
}

#[test]
fn request_mix_not_empty() {
    insta::assert_snapshot!(errors(&edit(
        &[(
            "requests = [{ kind = \"infer\", model = \"mlp\" }]",
            "requests = []"
        )],
        ""
    )));
}

#[test]
fn request_weights_positive_and_finite() {
    insta::assert_snapshot!(errors(&edit(
        &[(
            "requests = [{ kind = \"infer\", model = \"mlp\" }]",
            "requests = [\n  { kind = \"infer\", model = \"mlp\", weight = 0 },\n  { kind = \"infer\", model = \"mlp\", weight = nan },\n]"
        )],
        ""
    )));
}

#[test]
fn completion_max_tokens_at_least_one() {
    insta::assert_snapshot!(errors(&edit(
        &[(
            "requests = [{ kind = \"infer\", model = \"mlp\" }]",
            "requests = [{ kind = \"completion\", model = \"gru\", prompt = \"hi\", max_tokens = 0 }]"
        )],
        ""
    )));
}

#[test]
fn http_method_and_path_are_checked() {
    insta::assert_snapshot!(errors(&edit(
        &[(
            "requests = [{ kind = \"infer\", model = \"mlp\" }]",
            "requests = [{ kind = \"http\", method = \"FETCH\", path = \"healthz\" }]"
        )],
        ""
    )));
}

// --- max-throughput search -----------------------------------------------------------

const SEARCH_OK: &str = "\n[workload.search]\nlatency_ms_max = 50\nrate_per_s_min = 10\nrate_per_s_max = 1000\ntrial = \"5s\"\n";

/// BASE switched to max-throughput (no faults, no SLOs) with `search` as the search table.
fn max_throughput(search: &str, extra: &str) -> String {
    let base = BASE.split("[[faults]]").next().expect("BASE has faults");
    let base = base
        .replace("rate_per_s = 100", "mode = \"max-throughput\"")
        .replace("duration = \"10s\"\n", "");
    format!("{base}{search}{extra}")
}

#[test]
fn max_throughput_base_is_valid() {
    let s = parse(&max_throughput(SEARCH_OK, ""), "mt.toml").expect("valid");
    assert_eq!(s.horizon(), Duration::from_secs(7));
}

#[test]
fn max_throughput_needs_search() {
    insta::assert_snapshot!(errors(&max_throughput("", "")));
}

#[test]
fn search_only_with_max_throughput() {
    insta::assert_snapshot!(errors(&edit(&[("requests = [", "search = { latency_ms_max = 50, rate_per_s_min = 10, rate_per_s_max = 1000, trial = \"5s\" }\nrequests = [")], "")));
}

#[test]
fn search_bounds_are_checked() {
    let search = "\n[workload.search]\npercentile = 100\nlatency_ms_max = 0\nerror_ratio_max = 1.5\nrate_per_s_min = 500\nrate_per_s_max = 100\ntrial = \"0s\"\n";
    insta::assert_snapshot!(errors(&max_throughput(search, "")));
}

// --- faults --------------------------------------------------------------------------

#[test]
fn process_fault_needs_a_target() {
    insta::assert_snapshot!(errors(&edit(&[("target = \"server/0\"\n", "")], "")));
}

#[test]
fn fault_target_names_an_existing_replica() {
    let extra = "\n[[faults]]\nat = \"6s\"\nkind = \"process.kill\"\ntarget = \"server/2\"\n\n[[faults]]\nat = \"6s\"\nkind = \"process.kill\"\ntarget = \"server/x\"\n\n[[faults]]\nat = \"6s\"\nkind = \"process.kill\"\ntarget = \"sever\"\n";
    insta::assert_snapshot!(errors(&edit(&[], extra)));
}

#[test]
fn pause_and_spike_need_until_after_at() {
    let extra = "\n[[faults]]\nat = \"3s\"\nkind = \"process.pause\"\ntarget = \"server\"\n\n[[faults]]\nat = \"3s\"\nuntil = \"3s\"\nkind = \"load.spike\"\nmultiplier = 2.0\n";
    insta::assert_snapshot!(errors(&edit(&[], extra)));
}

#[test]
fn kill_rejects_until() {
    insta::assert_snapshot!(errors(&edit(
        &[("at = \"5s\"", "at = \"5s\"\nuntil = \"6s\"")],
        ""
    )));
}

#[test]
fn multiplier_only_and_always_on_load_spike() {
    let extra = "\n[[faults]]\nat = \"3s\"\nuntil = \"4s\"\nkind = \"load.spike\"\n\n[[faults]]\nat = \"3s\"\nuntil = \"4s\"\nkind = \"load.spike\"\nmultiplier = -1.0\ntarget = \"server\"\n";
    insta::assert_snapshot!(errors(&edit(
        &[("at = \"5s\"", "at = \"5s\"\nmultiplier = 2.0")],
        extra
    )));
}

#[test]
fn faults_fall_inside_the_run() {
    let extra = "\n[[faults]]\nat = \"8s\"\nuntil = \"20s\"\nkind = \"process.pause\"\ntarget = \"server\"\n";
    insta::assert_snapshot!(errors(&edit(&[("at = \"5s\"", "at = \"12s\"")], extra)));
}

#[test]
fn fault_ids_are_unique_including_defaults() {
    let extra = "\n[[faults]]\nid = \"kill\"\nat = \"6s\"\nkind = \"process.kill\"\ntarget = \"server\"\n\n[[faults]]\nid = \"process.kill-3\"\nat = \"6s\"\nkind = \"process.kill\"\ntarget = \"server\"\n\n[[faults]]\nat = \"7s\"\nkind = \"process.kill\"\ntarget = \"server\"\n";
    insta::assert_snapshot!(errors(&edit(&[], extra)));
}

#[test]
fn load_spike_needs_an_offered_rate() {
    let extra =
        "\n[[faults]]\nat = \"3s\"\nuntil = \"4s\"\nkind = \"load.spike\"\nmultiplier = 2.0\n";
    insta::assert_snapshot!(errors(&edit(
        &[("rate_per_s = 100", "mode = \"closed-loop\"")],
        extra
    )));
}

// --- SLOs ----------------------------------------------------------------------------

#[test]
fn slo_percentiles_and_ratios_in_range() {
    let extra = "\n[[slo]]\nkind = \"latency\"\npercentile = 100.5\nlatency_ms_max = 10\n\n[[slo]]\nkind = \"availability\"\nratio_min = 1.01\n\n[[slo]]\nkind = \"errors\"\nratio_max = -0.1\n";
    insta::assert_snapshot!(errors(&edit(&[], extra)));
}

#[test]
fn latency_and_error_slos_need_a_bound_and_min_below_max() {
    let extra = "\n[[slo]]\nkind = \"latency\"\npercentile = 50\n\n[[slo]]\nkind = \"errors\"\nerror_kind = \"http_503\"\n\n[[slo]]\nkind = \"latency\"\npercentile = 99\nlatency_ms_min = 300\nlatency_ms_max = 200\n";
    insta::assert_snapshot!(errors(&edit(&[], extra)));
}

#[test]
fn recovery_names_an_existing_fault() {
    let extra = "\n[[faults]]\nat = \"6s\"\nkind = \"process.kill\"\ntarget = \"server/1\"\n\n[[slo]]\nkind = \"recovery\"\nfault = \"process.kill-1\"\nrecovery_s_max = 2\n\n[[slo]]\nkind = \"recovery\"\nfault = \"kil\"\nrecovery_s_max = 0\n";
    insta::assert_snapshot!(errors(&edit(&[], extra)));
}

#[test]
fn throughput_slos_need_max_throughput_mode() {
    let extra = "\n[[slo]]\nkind = \"max-throughput\"\nrps_min = 100\n\n[[slo]]\nkind = \"throughput-ratio\"\nnumerator = \"batched\"\ndenominator = \"unbatched\"\nratio_min = 2\n";
    insta::assert_snapshot!(errors(&edit(&[], extra)));
}

#[test]
fn throughput_slos_name_existing_variants() {
    let extra = "\n[[variants]]\nname = \"batched\"\nargs = { server = [\"--max-batch\", \"32\"] }\n\n[[variants]]\nname = \"unbatched\"\n\n[[slo]]\nkind = \"max-throughput\"\nvariant = \"batchd\"\nrps_min = 100\n\n[[slo]]\nkind = \"throughput-ratio\"\nnumerator = \"batched\"\ndenominator = \"single\"\nratio_min = 2\n";
    insta::assert_snapshot!(errors(&max_throughput(SEARCH_OK, extra)));
}

#[test]
fn streaming_measures_need_streamed_requests() {
    insta::assert_snapshot!(errors(&edit(
        &[("percentile = 99", "measure = \"ttft\"\npercentile = 99")],
        ""
    )));
}

#[test]
fn faulted_phase_needs_faults() {
    let src = BASE
        .split("[[faults]]")
        .next()
        .expect("BASE has faults")
        .to_owned()
        + "[[slo]]\nkind = \"availability\"\nphase = \"faulted\"\nratio_min = 0.9\n";
    insta::assert_snapshot!(errors(&src));
}

// --- variants ------------------------------------------------------------------------

#[test]
fn variants_are_allowed_in_every_mode() {
    let s = parse(
        &edit(&[], "\n[[variants]]\nname = \"batched\"\n"),
        "open.toml",
    )
    .expect("open-loop variants are valid");
    assert_eq!(s.variants.len(), 1);
}

#[test]
fn variant_names_unique_and_args_name_components() {
    let extra = "\n[[variants]]\nname = \"batched\"\nargs = { sever = [\"--max-batch\", \"32\"] }\n\n[[variants]]\nname = \"batched\"\n";
    insta::assert_snapshot!(errors(&max_throughput(SEARCH_OK, extra)));
}

// --- training ------------------------------------------------------------------------

/// A valid training scenario: a rendezvous and three workers, a kill and a corrupted
/// gradient, the training SLOs, and a 1- and a 2-worker variant.
const TRAINING: &str = r#"description = "base training scenario for validation tests"

[[components]]
name = "rendezvous"
kind = "trainer-rendezvous"
args = ["--max-workers", "3", "--exit-when-done"]

[[components]]
name = "worker"
kind = "trainer-worker"
replicas = 3
args = ["--rendezvous", "{rendezvous.addr}", "--steps", "200", "--text", "{run_dir}/text-{replica}-of-{replicas}-{seed}"]

[workload]
target = "worker"
mode = "training"
warmup = "0s"
duration = "60s"

[workload.training]
warmup_steps = 5

[[faults]]
id = "crash"
at = "10s"
kind = "process.kill"
target = "worker/1"

[[faults]]
id = "sdc"
at = "20s"
kind = "gpu.ecc"
target = "worker/0"
mode = "bitflip"
steps = 2

[[slo]]
kind = "recovery"
fault = "crash"
recovery_s_max = 30

[[slo]]
kind = "lost-steps"
fault = "crash"
steps_max = 20

[[slo]]
kind = "loss"
final_ratio_max = 0.5

[[slo]]
kind = "accounting"

[[variants]]
name = "n1"
replicas = { worker = 1 }
inject_faults = false

[[variants]]
name = "n2"
replicas = { worker = 2 }
"#;

/// TRAINING with each `(from, to)` replaced once (each `from` must occur) and `extra` appended.
fn training(replacements: &[(&str, &str)], extra: &str) -> String {
    let mut src = TRAINING.to_owned();
    for (from, to) in replacements {
        assert!(
            src.contains(from),
            "test setup: {from:?} is not in TRAINING"
        );
        src = src.replacen(from, to, 1);
    }
    src.push_str(extra);
    src
}

#[test]
fn training_scenario_with_kill_ecc_and_variants_is_valid() {
    let s = parse(TRAINING, "training.toml").expect("TRAINING is valid");
    assert_eq!(s.workload.mode, LoadMode::Training);
    assert!(s.workload.requests.is_empty());
    assert_eq!(
        s.workload.training.as_ref().map(|t| t.warmup_steps),
        Some(5)
    );
    assert_eq!(s.faults[1].kind, FaultKind::GpuEcc);
    assert_eq!(s.faults[1].mode, Some(EccMode::Bitflip));
    assert!(matches!(s.slo[1], Slo::LostSteps { steps_max: 20, .. }));
    assert_eq!(s.variants[0].replicas.get("worker"), Some(&1));
    assert!(!s.variants[0].inject_faults);
    assert!(s.variants[1].inject_faults);
}

#[test]
fn scaling_efficiency_with_a_baseline_and_a_scaled_variant_is_valid() {
    let src = training(
        &[
            (
                "replicas = { worker = 2 }",
                "replicas = { worker = 2 }\ninject_faults = false",
            ),
            (
                "kind = \"loss\"\nfinal_ratio_max = 0.5",
                "kind = \"scaling-efficiency\"\nworkers = 2\nefficiency_min = 0.7",
            ),
        ],
        "",
    );
    parse(&src, "scaling.toml").expect("valid");
}

#[test]
fn training_mode_rejects_http_load_fields() {
    let extra = "\n[workload.search]\nlatency_ms_max = 50\nrate_per_s_min = 10\nrate_per_s_max = 1000\ntrial = \"5s\"\n";
    insta::assert_snapshot!(errors(&training(
        &[(
            "warmup = \"0s\"",
            "warmup = \"0s\"\nrate_per_s = 100\nrequests = [{ kind = \"infer\", model = \"mlp\" }]"
        )],
        extra
    )));
}

#[test]
fn training_target_is_a_trainer_worker() {
    insta::assert_snapshot!(errors(&training(
        &[("target = \"worker\"\nmode", "target = \"rendezvous\"\nmode")],
        ""
    )));
}

#[test]
fn http_target_is_a_server() {
    let extra = "\n[[components]]\nname = \"worker\"\nkind = \"trainer-worker\"\n";
    insta::assert_snapshot!(errors(&edit(
        &[("target = \"server\"\nrate", "target = \"worker\"\nrate")],
        extra
    )));
}

#[test]
fn training_table_only_with_training_mode() {
    insta::assert_snapshot!(errors(&edit(
        &[(
            "requests = [",
            "training = { warmup_steps = 2 }\nrequests = ["
        )],
        ""
    )));
}

#[test]
fn http_slos_are_rejected_in_training_mode() {
    let extra = "\n[[slo]]\nkind = \"latency\"\nmeasure = \"ttft\"\npercentile = 99\nlatency_ms_max = 100\n\n[[slo]]\nkind = \"availability\"\nratio_min = 0.99\n\n[[slo]]\nkind = \"errors\"\nratio_max = 0.01\n\n[[slo]]\nkind = \"throughput\"\nrps_min = 10\n";
    insta::assert_snapshot!(errors(&training(&[], extra)));
}

#[test]
fn training_slos_need_training_mode() {
    let extra = "\n[[slo]]\nkind = \"lost-steps\"\nsteps_max = 10\n\n[[slo]]\nkind = \"scaling-efficiency\"\nworkers = 2\nefficiency_min = 0.8\n\n[[slo]]\nkind = \"loss\"\nfinal_ratio_max = 0.5\n";
    insta::assert_snapshot!(errors(&edit(&[], extra)));
}

#[test]
fn lost_steps_and_loss_bounds_are_checked() {
    insta::assert_snapshot!(errors(&training(
        &[
            (
                "fault = \"crash\"\nsteps_max",
                "fault = \"crsh\"\nsteps_max"
            ),
            ("final_ratio_max = 0.5", "final_ratio_max = 0"),
        ],
        "\n[[slo]]\nkind = \"loss\"\nfinal_ratio_max = inf\n"
    )));
}

#[test]
fn scaling_efficiency_bounds_are_checked() {
    let extra = "\n[[slo]]\nkind = \"scaling-efficiency\"\nworkers = 1\nefficiency_min = 0\n\n[[slo]]\nkind = \"scaling-efficiency\"\nworkers = 2\nefficiency_min = 2.5\n";
    insta::assert_snapshot!(errors(&training(&[], extra)));
}

#[test]
fn scaling_efficiency_names_the_missing_variants() {
    let extra = "\n[[slo]]\nkind = \"scaling-efficiency\"\nworkers = 4\nefficiency_min = 0.8\n";
    insta::assert_snapshot!(errors(&training(
        &[("replicas = { worker = 1 }", "replicas = { worker = 3 }")],
        extra
    )));
}

#[test]
fn rendezvous_readiness_path_is_not_checked() {
    let src = training(
        &[(
            "kind = \"trainer-rendezvous\"",
            "kind = \"trainer-rendezvous\"\nreadiness = { path = \"tcp\" }",
        )],
        "",
    );
    parse(&src, "rendezvous.toml").expect("a rendezvous' readiness path is ignored");
}

#[test]
fn placeholders_in_args_are_known() {
    insta::assert_snapshot!(errors(&training(
        &[
            ("\"{rendezvous.addr}\"", "\"{rendevous.addr}\""),
            ("\"200\"", "\"{steps}\""),
            ("replicas = { worker = 2 }", "replicas = { worker = 2 }\nargs = { worker = [\"--x\", \"{rendezvous.port}{seed}\"] }"),
        ],
        ""
    )));
}

#[test]
fn doubled_braces_are_literal_and_not_placeholders() {
    let src = edit(
        &[("replicas = 2", "replicas = 2\nargs = [\"events {{}} http {{ server {{ listen {addr}; }} }}\", \"{{port}}\", \"{{x}} {y}\"]")],
        "",
    );
    let e = parse(&src, "b.toml").expect_err("{y} is unknown");
    let text = e.to_string();
    assert!(text.contains("unknown placeholder {y}"), "{text}");
    assert_eq!(text.matches("unknown placeholder").count(), 1, "{text}");
}

#[test]
fn replica_counts_are_bounded_by_the_loopback_block() {
    let src = edit(
        &[("replicas = 2", "replicas = 255\n\n[[components]]\nname = \"b\"\nkind = \"server\"\nreplicas = 200\n\n[[components]]\nname = \"c\"\nkind = \"server\"\nreplicas = 100")],
        "",
    );
    insta::assert_snapshot!(errors(&src));
    let src = edit(
        &[(
            "replicas = 2",
            "replicas = 200\n\n[[components]]\nname = \"b\"\nkind = \"server\"\nreplicas = 100",
        )],
        "",
    );
    insta::assert_snapshot!("replica_total", errors(&src));
}

#[test]
fn placeholders_in_env_values_are_known_and_own_address_ones_are_accepted() {
    let src = edit(
        &[("replicas = 2", "replicas = 2\nargs = [\"--port={port}\", \"--host\", \"{host}\"]\nenv = { LISTEN = \"{addr}\", PEER = \"{servr.addr}\", N = \"{nope}\" }")],
        "",
    );
    insta::assert_snapshot!(errors(&src));
}

#[test]
fn gpu_faults_need_training_mode_and_a_trainer_worker_target() {
    let extra = "\n[[faults]]\nat = \"6s\"\nkind = \"gpu.lost\"\ntarget = \"server/0\"\n\n[[faults]]\nat = \"6s\"\nkind = \"gpu.lost\"\n";
    insta::assert_snapshot!(errors(&edit(&[], extra)));
}

#[test]
fn gpu_fault_targets_are_trainer_worker_replicas() {
    let extra = "\n[[faults]]\nat = \"30s\"\nkind = \"gpu.lost\"\ntarget = \"rendezvous\"\n\n[[faults]]\nat = \"30s\"\nkind = \"gpu.lost\"\ntarget = \"worker/3\"\n";
    insta::assert_snapshot!(errors(&training(&[], extra)));
}

#[test]
fn gpu_fault_until_by_kind() {
    let extra = "\n[[faults]]\nat = \"30s\"\nuntil = \"31s\"\nkind = \"gpu.lost\"\ntarget = \"worker/0\"\n\n[[faults]]\nat = \"30s\"\nkind = \"gpu.throttle\"\ntarget = \"worker/0\"\nfactor = 3.0\n\n[[faults]]\nat = \"30s\"\nkind = \"gpu.oom\"\ntarget = \"worker/0\"\nlimit_bytes = 1000000\n";
    insta::assert_snapshot!(errors(&training(
        &[("steps = 2", "steps = 2\nuntil = \"21s\"")],
        extra
    )));
}

#[test]
fn gpu_fault_parameters_are_checked() {
    let extra = "\n[[faults]]\nat = \"30s\"\nuntil = \"40s\"\nkind = \"gpu.throttle\"\ntarget = \"worker\"\nfactor = 0.5\n\n[[faults]]\nat = \"30s\"\nuntil = \"40s\"\nkind = \"gpu.throttle\"\ntarget = \"worker\"\n\n[[faults]]\nat = \"30s\"\nuntil = \"40s\"\nkind = \"gpu.oom\"\ntarget = \"worker/0\"\nlimit_bytes = 0\nbackoff = true\n\n[[faults]]\nat = \"30s\"\nuntil = \"40s\"\nkind = \"gpu.oom\"\ntarget = \"worker/0\"\n";
    insta::assert_snapshot!(errors(&training(&[("steps = 2", "steps = 0")], extra)));
}

#[test]
fn gpu_parameters_only_on_their_kind() {
    let extra = "\n[[faults]]\nat = \"30s\"\nkind = \"gpu.lost\"\ntarget = \"worker/0\"\nmode = \"nan\"\nfactor = 2.0\nbackoff = false\n";
    insta::assert_snapshot!(errors(&training(
        &[(
            "target = \"worker/1\"",
            "target = \"worker/1\"\nsteps = 3\nlimit_bytes = 64"
        )],
        extra
    )));
}

#[test]
fn gpu_parameters_are_rejected_on_http_faults() {
    let extra = "\n[[faults]]\nat = \"3s\"\nuntil = \"4s\"\nkind = \"load.spike\"\nmultiplier = 2.0\nfactor = 2.0\n";
    insta::assert_snapshot!(errors(&edit(
        &[(
            "target = \"server/0\"",
            "target = \"server/0\"\nmode = \"inf\""
        )],
        extra
    )));
}

#[test]
fn after_step_needs_training_mode() {
    let extra = "\n[[faults]]\nat = \"3s\"\nuntil = \"4s\"\nkind = \"load.spike\"\nmultiplier = 2.0\nafter_step = 10\n";
    insta::assert_snapshot!(errors(&edit(&[], extra)));
}

#[test]
fn load_spike_is_rejected_in_training_mode() {
    let extra =
        "\n[[faults]]\nat = \"3s\"\nuntil = \"4s\"\nkind = \"load.spike\"\nmultiplier = 2.0\n";
    insta::assert_snapshot!(errors(&training(&[], extra)));
}

#[test]
fn variant_replicas_name_components_and_keep_fault_targets() {
    insta::assert_snapshot!(errors(&training(
        &[(
            "replicas = { worker = 2 }",
            "replicas = { worker = 1, rendezvous = 0, sever = 2 }"
        )],
        ""
    )));
}

// --- bounds (harness/scenario/src/bounds.rs) -----------------------------------------

/// `n` copies of `item` joined with ", " (a TOML array's contents).
fn repeated(item: &str, n: usize) -> String {
    vec![item; n].join(", ")
}

/// A TOML basic string of `n` bytes.
fn long_string(n: usize) -> String {
    format!("\"{}\"", "a".repeat(n))
}

#[test]
fn values_at_their_bounds_are_valid() {
    let src = edit(
        &[
            (
                "replicas = 2",
                &format!(
                    "replicas = 1\nargs = [{}]\nrestart = {{ max_restarts = 1000, backoff = \"1h\" }}\nreadiness = {{ timeout = \"1h\" }}",
                    repeated("\"--flag\"", 1000)
                ),
            ),
            (
                "rate_per_s = 100",
                "rate_per_s = 1_000_000\nconnections = 10_000\ntimeout = \"1h\"",
            ),
            ("warmup = \"2s\"", "warmup = \"24h\""),
            ("duration = \"10s\"", "duration = \"24h\""),
            (
                "requests = [{ kind = \"infer\", model = \"mlp\" }]",
                &format!(
                    "requests = [{{ kind = \"completion\", model = \"tiny-lm\", prompt = {}, max_tokens = 1_000_000, weight = 1_000_000 }}]",
                    long_string(1024 * 1024)
                ),
            ),
            ("latency_ms_max = 250", "latency_ms_max = 3_600_000"),
        ],
        "",
    );
    parse(&src, "at-bounds.toml").expect("every serving value at its bound is valid");

    let extra = "\n[[faults]]\nat = \"30s\"\nuntil = \"40s\"\nkind = \"gpu.throttle\"\ntarget = \"worker/0\"\nfactor = 1000\nafter_step = 100_000_000\n\n[[faults]]\nat = \"30s\"\nuntil = \"40s\"\nkind = \"gpu.oom\"\ntarget = \"worker/0\"\nlimit_bytes = 1_099_511_627_776\n";
    let src = training(
        &[
            ("steps = 2", "steps = 100_000_000"),
            ("warmup_steps = 5", "warmup_steps = 100_000_000"),
            ("steps_max = 20", "steps_max = 100_000_000"),
            ("recovery_s_max = 30", "recovery_s_max = 86400"),
        ],
        extra,
    );
    parse(&src, "at-bounds.toml").expect("every training value at its bound is valid");

    // 108 trials (the bracket, 100 steps, 6 repeats) of 2s + 10m: 18h.
    let search = "\n[workload.search]\nlatency_ms_max = 3_600_000\nrate_per_s_min = 1\nrate_per_s_max = 1_000_000\nsteps = 100\ntrial = \"10m\"\n";
    parse(&max_throughput(search, ""), "at-bounds.toml").expect("a search at its bounds is valid");
}

#[test]
fn scenario_name_and_description_are_bounded() {
    let src = format!(
        "name = {}\n{}",
        long_string(129),
        BASE.replacen(
            "description = \"base scenario for validation tests\"",
            &format!("description = {}", long_string(4097)),
            1
        )
    );
    insta::assert_snapshot!(errors(&src));
}

#[test]
fn lists_are_bounded_and_their_entries_then_unchecked() {
    let component = "\n[[components]]\nname = \"Bad Name\"\nkind = \"server\"\nreplicas = 0\n";
    let fault = "\n[[faults]]\nat = \"99s\"\nkind = \"process.kill\"\n";
    let slo = "\n[[slo]]\nkind = \"latency\"\npercentile = 0\n";
    let variant = "\n[[variants]]\nname = \"Bad Name\"\n";
    let src = edit(
        &[(
            "requests = [{ kind = \"infer\", model = \"mlp\" }]",
            &format!(
                "requests = [{}]",
                repeated("{ kind = \"infer\", model = \"\" }", 1001)
            ),
        )],
        &[
            component.repeat(254),
            fault.repeat(1000),
            slo.repeat(1000),
            variant.repeat(65),
        ]
        .concat(),
    );
    let err = parse(&src, "bad.toml").expect_err("five lists above their bounds");
    assert_eq!(err.diagnostics().len(), 5, "{err}");
    insta::assert_snapshot!(err.to_string());
}

#[test]
fn component_texts_and_lists_are_bounded() {
    let src = edit(
        &[(
            "replicas = 2",
            &format!(
                "replicas = 2\nargs = [\"--x\", {}]\nenv = {{ OK = {}, {} = \"1\" }}\nreadiness = {{ path = {} }}\n\n[[components]]\nname = {}\nkind = \"server\"\nargs = [{}]\nenv = {{ {} }}",
                long_string(64 * 1024 + 1),
                long_string(64 * 1024 + 1),
                "L".repeat(129),
                long_string(8 * 1024 + 1),
                long_string(129),
                repeated("\"--flag\"", 1001),
                (0..1001).map(|i| format!("V{i} = \"1\"")).collect::<Vec<_>>().join(", "),
            ),
        )],
        "",
    );
    insta::assert_snapshot!(errors(&src));
}

#[test]
fn command_line_and_environment_are_bounded_in_all() {
    let arg = long_string(64 * 1024);
    let src = edit(
        &[(
            "replicas = 2",
            &format!("replicas = 2\nargs = [{}]", repeated(&arg, 17)),
        )],
        "",
    );
    insta::assert_snapshot!(errors(&src));
    let variant = format!(
        "\n[[variants]]\nname = \"wide\"\nargs = {{ server = [{}] }}\n",
        repeated(&arg, 9)
    );
    let src = max_throughput(SEARCH_OK, &variant).replacen(
        "replicas = 2",
        &format!("replicas = 2\nargs = [{}]", repeated(&arg, 8)),
        1,
    );
    insta::assert_snapshot!("command_line_with_variant_args", errors(&src));
}

#[test]
fn restart_and_readiness_are_bounded() {
    insta::assert_snapshot!(errors(&edit(
        &[(
            "replicas = 2",
            "replicas = 2\nrestart = { max_restarts = 4_000_000_000, backoff = \"2h\" }\nreadiness = { timeout = \"100y\" }"
        )],
        ""
    )));
}

#[test]
fn workload_rate_durations_and_connections_are_bounded() {
    insta::assert_snapshot!(errors(&edit(
        &[
            (
                "rate_per_s = 100",
                "rate_per_s = 1e12\nconnections = 4_000_000_000\ntimeout = \"61m\""
            ),
            ("warmup = \"2s\"", "warmup = \"100y\""),
            ("duration = \"10s\"", "duration = \"24h 1s\""),
        ],
        ""
    )));
}

#[test]
fn connections_are_bounded_over_the_target_replicas() {
    insta::assert_snapshot!(errors(&edit(
        &[("rate_per_s = 100", "rate_per_s = 100\nconnections = 6000")],
        ""
    )));
}

#[test]
fn max_connections_is_at_least_connections_and_bounded_over_the_target_replicas() {
    insta::assert_snapshot!(errors(&edit(
        &[(
            "rate_per_s = 100",
            "rate_per_s = 100\nconnections = 8\nmax_connections = 4"
        )],
        ""
    )));
    insta::assert_snapshot!(
        "max_connections_over_the_replicas",
        errors(&edit(
            &[(
                "rate_per_s = 100",
                "rate_per_s = 100\nmax_connections = 6000"
            )],
            ""
        ))
    );
    insta::assert_snapshot!(
        "max_connections_and_connections_both_wrong",
        errors(&edit(
            &[(
                "rate_per_s = 100",
                "rate_per_s = 100\nconnections = 0\nmax_connections = 0"
            )],
            ""
        ))
    );
    insta::assert_snapshot!(
        "max_connections_over_its_bound_with_connections_over_theirs",
        errors(&edit(
            &[(
                "rate_per_s = 100",
                "rate_per_s = 100\nconnections = 20000\nmax_connections = 20001"
            )],
            ""
        ))
    );
    insta::assert_snapshot!(
        "max_connections_in_a_closed_loop",
        errors(&edit(
            &[(
                "rate_per_s = 100",
                "mode = \"closed-loop\"\nmax_connections = 64"
            )],
            ""
        ))
    );
}

#[test]
fn request_mix_entries_are_bounded() {
    let requests = format!(
        "requests = [\n  {{ kind = \"infer\", model = {}, weight = 1e7 }},\n  {{ kind = \"completion\", model = \"tiny-lm\", prompt = {}, max_tokens = 4294967295 }},\n  {{ kind = \"http\", method = {}, path = {}, body = {} }},\n]",
        long_string(129),
        long_string(1024 * 1024 + 1),
        long_string(129),
        long_string(8 * 1024 + 1),
        long_string(1024 * 1024 + 1),
    );
    insta::assert_snapshot!(errors(&edit(
        &[(
            "requests = [{ kind = \"infer\", model = \"mlp\" }]",
            &requests
        )],
        ""
    )));
}

#[test]
fn search_is_bounded() {
    let search = "\n[workload.search]\nlatency_ms_max = 1e300\nrate_per_s_min = 2e6\nrate_per_s_max = 1e12\nsteps = 1000000\ntrial = \"25h\"\n";
    insta::assert_snapshot!(errors(&max_throughput(search, "")));
    let search = "\n[workload.search]\nlatency_ms_max = 50\nrate_per_s_min = 10\nrate_per_s_max = 1000\nsteps = 100\ntrial = \"15m\"\n";
    insta::assert_snapshot!(
        "search_length_is_bounded",
        errors(&max_throughput(search, ""))
    );
}

#[test]
fn fault_counts_sizes_and_factors_are_bounded() {
    let extra = format!(
        "\n[[faults]]\nid = {}\nat = \"30s\"\nuntil = \"40s\"\nkind = \"gpu.throttle\"\ntarget = \"worker/0\"\nfactor = 1e300\nafter_step = 9223372036854775807\n\n[[faults]]\nat = \"30s\"\nuntil = \"40s\"\nkind = \"gpu.oom\"\ntarget = \"worker/0\"\nlimit_bytes = 9223372036854775807\n",
        long_string(129)
    );
    insta::assert_snapshot!(errors(&training(
        &[
            ("steps = 2", "steps = 4_000_000_000"),
            ("warmup_steps = 5", "warmup_steps = 4_000_000_000"),
        ],
        &extra
    )));
}

#[test]
fn load_spike_is_bounded_with_the_rate_it_multiplies() {
    let extra = "\n[[faults]]\nat = \"3s\"\nuntil = \"4s\"\nkind = \"load.spike\"\nmultiplier = 1001\n\n[[faults]]\nat = \"3s\"\nuntil = \"4s\"\nkind = \"load.spike\"\nmultiplier = 200\n";
    insta::assert_snapshot!(errors(&edit(
        &[("rate_per_s = 100", "rate_per_s = 10_000")],
        extra
    )));
    let extra =
        "\n[[faults]]\nat = \"3s\"\nuntil = \"4s\"\nkind = \"load.spike\"\nmultiplier = 2\n";
    let search = SEARCH_OK.replace("rate_per_s_max = 1000", "rate_per_s_max = 600_000");
    insta::assert_snapshot!(
        "load_spike_is_bounded_with_the_search_rate",
        errors(&max_throughput(&search, extra))
    );
}

#[test]
fn slo_bounds_are_checked() {
    let extra = format!(
        "\n[[slo]]\nkind = \"latency\"\npercentile = 50\nlatency_ms_min = 3600001\nlatency_ms_max = 1e300\n\n[[slo]]\nkind = \"errors\"\nerror_kind = {}\nratio_max = 0.1\n\n[[slo]]\nkind = \"throughput\"\nrps_min = 2e6\n\n[[slo]]\nkind = \"recovery\"\nfault = \"kill\"\nrecovery_s_max = 86401\n",
        long_string(129)
    );
    insta::assert_snapshot!(errors(&edit(&[], &extra)));
}

#[test]
fn training_slo_bounds_are_checked() {
    insta::assert_snapshot!(errors(&training(
        &[
            ("steps_max = 20", "steps_max = 9223372036854775807"),
            ("final_ratio_max = 0.5", "final_ratio_max = 1e7"),
        ],
        "\n[[slo]]\nkind = \"scaling-efficiency\"\nworkers = 300\nefficiency_min = 0.5\n"
    )));
}

#[test]
fn throughput_slo_and_variant_bounds_are_checked() {
    let extra = format!(
        "\n[[variants]]\nname = {}\nargs = {{ server = [{}] }}\n\n[[variants]]\nname = \"long-key\"\nreplicas = {{ {} = 1 }}\n\n[[slo]]\nkind = \"max-throughput\"\nrps_min = 1e7\n\n[[slo]]\nkind = \"throughput-ratio\"\nnumerator = \"long-key\"\ndenominator = \"long-key\"\nratio_min = 1e7\n",
        long_string(129),
        repeated("\"--flag\"", 1001),
        "k".repeat(129),
    );
    insta::assert_snapshot!(errors(&max_throughput(SEARCH_OK, &extra)));
}

/// Values at the edges of what TOML and the types hold are errors, never panics: durations
/// of u64::MAX seconds (whose sum would overflow), NaN and infinities, integers beyond
/// their type or beyond TOML's i64.
#[test]
fn extreme_values_are_errors_not_panics() {
    let max_s = format!("\"{}s\"", u64::MAX);
    insta::assert_snapshot!(
        "extreme_durations_and_floats",
        errors(
            &edit(
                &[
                    (
                        "rate_per_s = 100",
                        "rate_per_s = nan\nconnections = 10_000\ntimeout = MAX"
                    ),
                    ("warmup = \"2s\"", "warmup = MAX"),
                    ("duration = \"10s\"", "duration = MAX"),
                    (
                        "requests = [{ kind = \"infer\", model = \"mlp\" }]",
                        "requests = [{ kind = \"infer\", model = \"mlp\", weight = inf }]"
                    ),
                    ("at = \"5s\"", "at = MAX"),
                    ("percentile = 99", "percentile = -nan"),
                    ("latency_ms_max = 250", "latency_ms_max = -inf"),
                ],
                "\n[[faults]]\nat = MAX\nuntil = MAX\nkind = \"load.spike\"\nmultiplier = inf\n"
            )
            .replace("MAX", &max_s)
        )
    );
    insta::assert_snapshot!(
        "extreme_training_values",
        errors(
            &training(
                &[
                    ("warmup = \"0s\"", "warmup = MAX"),
                    ("steps = 2", "steps = 4294967295"),
                ],
                "\n[[faults]]\nat = \"30s\"\nuntil = MAX\nkind = \"gpu.throttle\"\ntarget = \"worker\"\nfactor = nan\n\n[[slo]]\nkind = \"scaling-efficiency\"\nworkers = 4294967295\nefficiency_min = nan\n"
            )
            .replace("MAX", &max_s)
        )
    );
    let search = format!(
        "\n[workload.search]\npercentile = nan\nlatency_ms_max = inf\nerror_ratio_max = nan\nrate_per_s_min = -inf\nrate_per_s_max = nan\nsteps = 4294967295\ntrial = {max_s}\n"
    );
    insta::assert_snapshot!(
        "extreme_search_values",
        errors(&max_throughput(
            &search,
            "\n[[faults]]\nat = \"1s\"\nuntil = \"2s\"\nkind = \"load.spike\"\nmultiplier = 1e308\n"
        ))
    );
    // Past what the type or TOML holds: the parser's located error, not a wrap-around.
    let mut parse_errors = Vec::new();
    for (from, to) in [
        ("replicas = 2", "replicas = 4294967296"),
        ("replicas = 2", "replicas = -1"),
        (
            "rate_per_s = 100",
            "rate_per_s = 100\nseed = 99999999999999999999",
        ),
        ("warmup = \"2s\"", "warmup = \"18446744073709551616s\""),
        ("warmup = \"2s\"", "warmup = \"600000000000y\""),
        ("rate_per_s = 100", "rate_per_s = 1e400"),
    ] {
        let err = parse(&edit(&[(from, to)], ""), "bad.toml").expect_err(to);
        assert_eq!(err.diagnostics().len(), 1, "{to}: {err}");
        parse_errors.push(err.to_string());
    }
    insta::assert_snapshot!("values_past_their_types", parse_errors.join("\n"));
}

#[test]
fn http_request_headers_are_names_values_and_not_the_generator_s_own() {
    let src = edit(
        &[(
            "requests = [{ kind = \"infer\", model = \"mlp\" }]",
            "requests = [{ kind = \"http\", path = \"/x\", headers = { \"x-ok\" = \"1\", \"bad name\" = \"v\", Host = \"h\", x-multi = \"a\\nb\" } }]",
        )],
        "",
    );
    insta::assert_snapshot!(errors(&src));
}

#[test]
fn stages_are_open_loop_bounded_and_within_the_run() {
    let src = edit(
        &[(
            "requests = [{ kind = \"infer\", model = \"mlp\" }]",
            "requests = [{ kind = \"infer\", model = \"mlp\" }]\nstages = [{ duration = \"0s\", target = 5 }, { duration = \"20s\", target = -1 }]",
        )],
        "",
    );
    insta::assert_snapshot!(errors(&src));
}

#[test]
fn abort_on_fail_needs_open_loop_measured_and_a_judgeable_slo() {
    let extra = "\n[[slo]]\nkind = \"availability\"\nphase = \"steady\"\nratio_min = 0.9\nabort_on_fail = true\n\n[[slo]]\nkind = \"errors\"\nerror_kind = \"http_429\"\nratio_max = 0.1\nabort_on_fail = true\n\n[[slo]]\nkind = \"errors\"\nratio_min = 0.1\nabort_on_fail = true\n";
    insta::assert_snapshot!(errors(&edit(&[], extra)));
}

#[test]
fn net_faults_are_valid_on_server_replicas_with_or_without_until() {
    let extra = "\n[[faults]]\nat = \"3s\"\nuntil = \"6s\"\nkind = \"net.latency\"\ntarget = \"server\"\nlatency = \"200ms\"\njitter = \"10ms\"\n\n[[faults]]\nat = \"3s\"\nkind = \"net.bandwidth\"\ntarget = \"server/1\"\nrate_kbps = 100\n\n[[faults]]\nat = \"3s\"\nuntil = \"4s\"\nkind = \"net.http_error\"\ntarget = \"server\"\nstatus = 502\nratio = 0.25\n\n[[faults]]\nat = \"3s\"\nuntil = \"4s\"\nkind = \"net.blackhole\"\ntarget = \"server/0\"\n\n[[faults]]\nat = \"7s\"\nuntil = \"8s\"\nkind = \"net.refuse\"\ntarget = \"server/0\"\n\n[[faults]]\nat = \"8s\"\nkind = \"net.reset\"\ntarget = \"server\"\n";
    let s = parse(&edit(&[], extra), "net.toml").expect("valid net faults");
    assert_eq!(s.faults.len(), 7);
    assert_eq!(
        s.faults[1].latency,
        Some(std::time::Duration::from_millis(200))
    );
}

#[test]
fn net_fault_parameters_are_checked_and_named() {
    let extra = "\n[[faults]]\nat = \"3s\"\nkind = \"net.latency\"\ntarget = \"server\"\n\n[[faults]]\nat = \"3s\"\nkind = \"net.latency\"\ntarget = \"server\"\nlatency = \"2h\"\nrate_kbps = 5\n\n[[faults]]\nat = \"3s\"\nkind = \"net.bandwidth\"\ntarget = \"server\"\nrate_kbps = 0\n\n[[faults]]\nat = \"3s\"\nkind = \"net.http_error\"\ntarget = \"server\"\nstatus = 99\nratio = 1.5\n\n[[faults]]\nat = \"3s\"\nkind = \"net.reset\"\n";
    insta::assert_snapshot!(errors(&edit(&[], extra)));
}

#[test]
fn a_command_component_runs_any_program_and_needs_its_command() {
    let ok = "description = \"x\"\n[[components]]\nname = \"web\"\nkind = \"command\"\ncommand = \"python3\"\nargs = [\"-m\", \"http.server\", \"{port}\"]\nreadiness = { probe = \"http\", path = \"/\" }\n[workload]\ntarget = \"web\"\nrate_per_s = 10\nduration = \"2s\"\nrequests = [{ kind = \"http\", path = \"/\" }]\n[[faults]]\nat = \"1s\"\nkind = \"net.refuse\"\ntarget = \"web\"\n";
    let s = parse(ok, "cmd.toml").expect("a valid command component");
    assert_eq!(s.components[0].command.as_deref(), Some("python3"));
    let missing = ok.replace("command = \"python3\"\n", "");
    let e = errors(&missing);
    assert!(e.contains("components[0].command: missing"), "{e}");
    let on_server = BASE.replace("replicas = 2", "replicas = 2\ncommand = \"nginx\"");
    let e = errors(&on_server);
    assert!(e.contains("only used by kind = \"command\""), "{e}");
}

const REGIONS: &str = "description = \"x\"\n[[regions]]\nname = \"us\"\n[[regions]]\nname = \"eu\"\n[[links]]\nbetween = [\"us\", \"eu\"]\nrtt = \"80ms\"\n[[components]]\nname = \"server\"\nkind = \"server\"\nregion = \"eu\"\n[workload]\ntarget = \"server\"\nregion = \"us\"\nrate_per_s = 10\nduration = \"5s\"\nrequests = [{ kind = \"infer\", model = \"mlp\" }]\n[[faults]]\nat = \"1s\"\nuntil = \"2s\"\nkind = \"region.partition\"\nregions = [\"eu\"]\n[[faults]]\nat = \"2s\"\nkind = \"region.latency\"\nregions = [\"us\"]\nlatency = \"100ms\"\n[[faults]]\nat = \"3s\"\nkind = \"region.blackhole\"\nregions = [\"eu\"]\n[[faults]]\nat = \"3s\"\nuntil = \"4s\"\nkind = \"region.flap\"\nregions = [\"eu\"]\nperiod = \"500ms\"\n[[faults]]\nat = \"4s\"\nkind = \"region.down\"\nregions = [\"eu\", \"us\"]\n";

#[test]
fn regions_links_and_region_faults_are_valid() {
    let s = parse(REGIONS, "regions.toml").expect("valid regions");
    assert_eq!(s.regions.len(), 2);
    assert_eq!(s.links[0].rtt, Some(std::time::Duration::from_millis(80)));
    assert_eq!(s.components[0].region.as_deref(), Some("eu"));
}

#[test]
fn bad_regions_links_and_region_faults_are_named() {
    let bad = REGIONS
        .replace(
            "region = \"eu\"\n[workload]",
            "region = \"asia\"\n[workload]",
        )
        .replace("between = [\"us\", \"eu\"]", "between = [\"us\", \"us\"]")
        .replace(
            "regions = [\"eu\"]\n[[faults]]\nat = \"2s\"",
            "regions = [\"eu\", \"us\"]\n[[faults]]\nat = \"2s\"",
        )
        .replace("regions = [\"us\"]\nlatency", "latency")
        .replace(
            "kind = \"region.blackhole\"\nregions = [\"eu\"]",
            "kind = \"region.blackhole\"\ntarget = \"server\"\nregions = [\"mars\"]\nperiod = \"1s\"",
        )
        .replace("period = \"500ms\"", "period = \"5ms\"");
    insta::assert_snapshot!(errors(&bad));
    // A region named without any [[regions]].
    let e = errors(&BASE.replace("replicas = 2", "replicas = 2\nregion = \"us\""));
    assert!(e.contains("no [[regions]] are declared"), "{e}");
}

/// Two regions and the load as two clients, one in each.
const CLIENTS: &str = r#"description = "load from two regions"

[[regions]]
name = "us"

[[regions]]
name = "eu"

[[links]]
between = ["us", "eu"]
rtt = "80ms"

[[components]]
name = "server"
kind = "server"
region = "us"

[workload]
target = "server"
duration = "5s"
requests = [{ kind = "infer", model = "mlp" }]

[[workload.clients]]
region = "us"
rate_per_s = 40

[[workload.clients]]
name = "europe"
region = "eu"
rate_per_s = 10
"#;

#[test]
fn clients_are_valid_named_after_their_region_and_their_rates_add_up() {
    let s = parse(CLIENTS, "clients.toml").expect("valid clients");
    let names: Vec<&str> = s
        .workload
        .clients
        .iter()
        .map(|c| c.display_name())
        .collect();
    assert_eq!(names, ["us", "europe"]);
    assert_eq!(s.workload.rate_per_s, None);
    assert_eq!(s.workload.total_rate_per_s(), Some(50.0));
}

#[test]
fn clients_replace_the_workload_rate_and_region() {
    insta::assert_snapshot!(errors(&CLIENTS.replace(
        "duration = \"5s\"",
        "duration = \"5s\"\nrate_per_s = 50\nregion = \"us\""
    )));
}

#[test]
fn clients_name_declared_regions_rates_and_unique_names() {
    let more = r#"
[[workload.clients]]
region = "us"
rate_per_s = 1

[[workload.clients]]
name = "second"
region = "eu"
rate_per_s = inf

[[workload.clients]]
name = "second"
region = "eu"
rate_per_s = 1
"#;
    let bad = CLIENTS
        .replace(
            "name = \"europe\"\nregion = \"eu\"\nrate_per_s = 10",
            "name = \"Europe\"\nregion = \"mars\"\nrate_per_s = 0",
        )
        .to_owned()
        + more;
    insta::assert_snapshot!(errors(&bad));
    // Clients in regions nobody declared.
    let e = errors(&edit(
        &[("rate_per_s = 100\n", "")],
        "\n[[workload.clients]]\nregion = \"us\"\nrate_per_s = 5\n",
    ));
    assert!(
        e.contains("workload.clients[0].region: \"us\" but no [[regions]] are declared"),
        "{e}"
    );
}

#[test]
fn clients_are_bounded_in_number_rate_and_connections() {
    let one = "\n[[workload.clients]]\nname = \"c{i}\"\nregion = \"us\"\nrate_per_s = 1\n";
    let seventeen: String = (0..17)
        .map(|i| one.replace("{i}", &i.to_string()))
        .collect();
    insta::assert_snapshot!(
        "clients_are_bounded_in_number",
        errors(&format!("{CLIENTS}{seventeen}"))
    );
    insta::assert_snapshot!(
        "clients_are_bounded_in_rate_and_connections",
        errors(
            &CLIENTS
                .replace("rate_per_s = 40", "rate_per_s = 900000")
                .replace("rate_per_s = 10", "rate_per_s = 200000")
                .replace("duration = \"5s\"", "duration = \"5s\"\nconnections = 6000")
        )
    );
    // A spike multiplies every client's rate: their sum is what it may not push past the bound.
    let spiked = CLIENTS.replace("rate_per_s = 40", "rate_per_s = 400000")
        + "\n[[faults]]\nat = \"1s\"\nuntil = \"2s\"\nkind = \"load.spike\"\nmultiplier = 3\n";
    let e = errors(&spiked);
    assert!(
        e.contains("faults[0].multiplier: spikes the rates of workload.clients together = 400010 to 1200030 requests per second; expected at most 1000000"),
        "{e}"
    );
}

#[test]
fn clients_need_an_open_loop() {
    for (mode, workload) in [
        ("closed-loop", "duration = \"5s\"\nmode = \"closed-loop\""),
        (
            "max-throughput",
            "mode = \"max-throughput\"\nsearch = { latency_ms_max = 100, rate_per_s_min = 10, rate_per_s_max = 100, trial = \"2s\" }",
        ),
        ("training", "duration = \"5s\"\nmode = \"training\""),
    ] {
        let e = errors(&CLIENTS.replace("duration = \"5s\"", workload));
        assert!(
            e.contains(&format!(
                "workload.clients: clients are open loops, each at its own rate (mode is \"{mode}\"); expected mode = \"open-loop\", or no [[workload.clients]]"
            )),
            "{mode}: {e}"
        );
    }
    insta::assert_snapshot!(errors(&CLIENTS.replace(
        "duration = \"5s\"",
        "duration = \"5s\"\nmode = \"closed-loop\""
    )));
}

#[test]
fn netns_mode_parses_and_its_bounds_are_named() {
    let s = parse(
        &format!("{REGIONS}[network]\nmode = \"netns\"\n"),
        "netns.toml",
    )
    .expect("netns mode is valid");
    assert_eq!(s.network.mode, scenario::NetworkMode::Netns);
    assert_eq!(
        parse(REGIONS, "regions.toml").expect("valid").network.mode,
        scenario::NetworkMode::Loopback,
        "loopback is the default"
    );
    // 16 replicas in one region, and 16 again under a variant.
    let crowded = REGIONS.replace(
        "kind = \"server\"\nregion = \"eu\"\n",
        "kind = \"server\"\nregion = \"eu\"\nreplicas = 16\n",
    );
    let varied = format!(
        "{REGIONS}[[variants]]\nname = \"big\"\nreplicas = {{ server = 16 }}\n[network]\nmode = \"netns\"\n"
    );
    let many: String = (0..17)
        .map(|i| format!("[[regions]]\nname = \"r{i}\"\n"))
        .collect();
    let too_many = format!(
        "description = \"x\"\n{many}[[components]]\nname = \"server\"\nkind = \"server\"\n[workload]\ntarget = \"server\"\nrate_per_s = 10\nduration = \"5s\"\nrequests = [{{ kind = \"infer\", model = \"mlp\" }}]\n[network]\nmode = \"netns\"\n"
    );
    let bad = [
        errors(&format!("{crowded}[network]\nmode = \"netns\"\n")),
        errors(&varied),
        errors(&too_many),
        errors(&format!("{REGIONS}[network]\nmode = \"bridge\"\n")),
    ];
    // The same crowding is fine in loopback mode.
    parse(&crowded, "crowded.toml").expect("16 replicas in a loopback region");
    insta::assert_snapshot!(bad.join("\n---\n"));
}
