//! Number formatting shared by the page, the terminal summary and the plots.

use crate::model::Accounting;

/// A number with about three significant digits, no exponent: 0.0123, 1.23, 12.3, 123, 12345.
pub fn num(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let magnitude = value.abs();
    let decimals = if magnitude == 0.0 || magnitude >= 100.0 {
        0
    } else if magnitude >= 10.0 {
        1
    } else if magnitude >= 1.0 {
        2
    } else {
        // 0.0123 → 4 decimals
        (2 - magnitude.log10().floor() as i32).clamp(2, 9) as usize
    };
    format!("{value:.decimals$}")
}

/// [`num`] without trailing zeros, for axis ticks and labels: 2.00 → "2", 50.0 → "50".
pub fn short(value: f64) -> String {
    let s = num(value);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// A percentile as a name: 99 → "p99", 99.9 → "p99.9".
pub fn percentile_name(p: f64) -> String {
    let s = format!("{p:.4}");
    format!("p{}", s.trim_end_matches('0').trim_end_matches('.'))
}

/// A latency in milliseconds, or "–" when there is none.
pub fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), num)
}

/// A ratio as a percentage with enough decimals to show nines: 0.99995 → "99.995 %".
pub fn percent(ratio: Option<f64>) -> String {
    let Some(ratio) = ratio else {
        return "–".to_owned();
    };
    let p = ratio * 100.0;
    let s = if (99.0..100.0).contains(&p) {
        format!("{p:.3}")
    } else {
        format!("{p:.1}")
    };
    format!("{s} %")
}

/// Σ errors by kind.
pub fn error_total(counts: &Accounting) -> u64 {
    counts.errors.values().sum()
}

/// Requests that did not succeed: `Σ errors + timeouts + dropped`.
pub fn failed(counts: &Accounting) -> u64 {
    error_total(counts) + counts.timeouts + counts.dropped_by_generator
}

/// `ok + Σ errors + timeouts + dropped`: what `sent` must equal.
pub fn accounted(counts: &Accounting) -> u64 {
    counts.ok + error_total(counts) + counts.timeouts + counts.dropped_by_generator
}

/// The accounting line: `sent 1000 = ok 990 + errors 8 + timeouts 2 + dropped 0 (balanced)`.
pub fn accounting_line(counts: &Accounting) -> String {
    let errors = error_total(counts);
    let by_kind = if counts.errors.is_empty() {
        String::new()
    } else {
        let kinds: Vec<String> = counts
            .errors
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        format!(" [{}]", kinds.join(", "))
    };
    let verdict = if counts.balanced && accounted(counts) == counts.sent {
        "balanced: yes".to_owned()
    } else {
        format!(
            "balanced: NO (ok + errors + timeouts + dropped = {})",
            accounted(counts)
        )
    };
    format!(
        "sent {} = ok {} + errors {errors}{by_kind} + timeouts {} + dropped {}; {verdict}",
        counts.sent, counts.ok, counts.timeouts, counts.dropped_by_generator
    )
}

/// Escapes text for HTML element content and attribute values.
pub fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One line per training job: throughput and step accounting.
pub fn training_line(t: &crate::model::TrainingResult) -> String {
    format!(
        "training {} ({} workers): {} samples/s steady; steps {} of {} completed, {} recomputed, {} skipped; {} checkpoints, {} restores; ECC corrupted {} steps, {} silent; accounted: {}",
        t.variant,
        t.workers,
        t.throughput_samples_per_s.map_or_else(|| "–".to_owned(), num),
        t.steps_completed,
        t.target_steps.map_or_else(|| "?".to_owned(), |s| s.to_string()),
        t.steps_recomputed,
        t.steps_skipped,
        t.checkpoints_written,
        t.restores,
        t.ecc_injected,
        t.ecc_silent,
        if t.steps_accounted { "yes" } else { "NO" }
    )
}

/// One accounting check of a run: what it counts, whether it balanced, the line to show.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountingCheck {
    pub name: String,
    pub balanced: bool,
    pub line: String,
}

/// The run's accounting checks: request accounting for a load run (sent = ok + errors +
/// timeouts + dropped), step accounting per job for a training run.
pub fn accounting_checks(metrics: &crate::model::RunMetrics) -> Vec<AccountingCheck> {
    if metrics.training.is_empty() {
        let a = &metrics.accounting;
        vec![AccountingCheck {
            name: "accounting: sent = ok + errors + timeouts + dropped".to_owned(),
            balanced: a.balanced && accounted(a) == a.sent,
            line: accounting_line(a),
        }]
    } else {
        metrics
            .training
            .iter()
            .map(|t| AccountingCheck {
                name: format!(
                    "accounting: every step of training job {} completed",
                    t.variant
                ),
                balanced: t.steps_accounted,
                line: training_line(t),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_three_significant_digits() {
        assert_eq!(num(0.0), "0");
        assert_eq!(num(0.01234), "0.0123");
        assert_eq!(num(0.5), "0.500");
        assert_eq!(num(1.234), "1.23");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(1234.5), "1234");
        assert_eq!(ms(None), "–");
        assert_eq!(short(2.0), "2");
        assert_eq!(short(0.0316), "0.0316");
        assert_eq!(percentile_name(99.0), "p99");
        assert_eq!(percentile_name(99.9), "p99.9");
        assert_eq!(percent(Some(0.99995)), "99.995 %");
        assert_eq!(percent(Some(1.0)), "100.0 %");
    }

    #[test]
    fn html_escapes_markup() {
        assert_eq!(
            html(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
