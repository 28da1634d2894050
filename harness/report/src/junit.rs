//! JUnit XML of a run, for CI test-report viewers.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use crate::format;
use crate::model::RunMetrics;

/// A JUnit report with one test suite named after the scenario: one test case per SLO
/// verdict, one per accounting check (requests, or steps per training job), and one (an
/// error) per run failure.
pub fn junit_xml(metrics: &RunMetrics) -> String {
    let scenario = &metrics.run.scenario;
    let mut suite = TestSuite::new(scenario.as_str());
    let wall = Duration::try_from_secs_f64(metrics.run.wall_s).unwrap_or_default();
    suite.set_time(wall);
    suite.add_property(("run_id", metrics.run.run_id.as_str()));
    suite.add_property(("seed", metrics.run.seed.to_string().as_str()));
    suite.add_property(("git_commit", metrics.run.git_commit.as_str()));

    for slo in &metrics.slos {
        let name = format!("slo[{}] {}", slo.index, slo.description);
        let status = if slo.pass {
            TestCaseStatus::success()
        } else {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status
                .set_message(format!(
                    "expected {}, observed {}",
                    slo.expected, slo.observed
                ))
                .set_type("slo");
            status
        };
        let mut case = TestCase::new(name, status);
        case.set_classname(format!("{scenario}.slo"));
        suite.add_test_case(case);
    }

    for check in format::accounting_checks(metrics) {
        let status = if check.balanced {
            TestCaseStatus::success()
        } else {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status
                .set_message(check.line.as_str())
                .set_type("accounting");
            status
        };
        let mut case = TestCase::new(check.name, status);
        case.set_classname(format!("{scenario}.run"))
            .set_system_out(check.line);
        suite.add_test_case(case);
    }

    for (i, failure) in metrics.failures.iter().enumerate() {
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
        status.set_message(failure.as_str()).set_type("run failure");
        let mut case = TestCase::new(format!("run failure {}", i + 1), status);
        case.set_classname(format!("{scenario}.run"));
        suite.add_test_case(case);
    }

    let mut report = Report::new("faultline");
    report.set_time(wall).add_test_suite(suite);
    report
        .to_string()
        .expect("serializing a JUnit report into memory does not fail")
}
