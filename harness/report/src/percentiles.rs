//! From HdrHistograms (microseconds, as `metrics.md` prescribes) to the millisecond figures of
//! `metrics.json`.

use hdrhistogram::Histogram;

use crate::model::{DistributionPoint, Percentiles};

const US_PER_MS: f64 = 1000.0;

fn ms(us: u64) -> f64 {
    us as f64 / US_PER_MS
}

impl Percentiles {
    /// p50, p90, p95, p99, p99.9 and max of a histogram recorded in microseconds, in
    /// milliseconds. Values are HdrHistogram's "highest equivalent value" of the bucket
    /// (what `hdrhistogram::Histogram::value_at_quantile` returns). An empty histogram gives
    /// `count = 0` and every percentile `None`.
    pub fn from_histogram(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        let at = |q: f64| Some(ms(histogram.value_at_quantile(q)));
        Percentiles {
            count: histogram.len(),
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: Some(ms(histogram.max())),
        }
    }

    /// The value at `percentile` if it is one of the stored ones (50, 90, 95, 99, 99.9, 100).
    pub fn at(&self, percentile: f64) -> Option<f64> {
        const STORED: [f64; 6] = [50.0, 90.0, 95.0, 99.0, 99.9, 100.0];
        let i = STORED.iter().position(|p| (p - percentile).abs() < 1e-9)?;
        [
            self.p50_ms,
            self.p90_ms,
            self.p95_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms,
        ][i]
    }
}

/// "Nines" of a percentile: `-log10(1 - p/100)`; 0 → 0, 90 → 1, 99 → 2, 99.9 → 3. The x axis
/// of HdrHistogram-style percentile plots. `f64::INFINITY` at 100.
pub fn nines(percentile: f64) -> f64 {
    -(1.0 - percentile / 100.0).log10()
}

/// The percentile distribution of the measured phase for the distribution plot: corrected
/// latency and service time (both histograms in microseconds) at percentiles spaced evenly
/// on the nines scale (8 per decade) up to the resolution the sample count supports (at most
/// 99.999), then the max at percentile 100. Empty when `latency` is empty.
pub fn distribution_from_histograms(
    latency: &Histogram<u64>,
    service: &Histogram<u64>,
) -> Vec<DistributionPoint> {
    if latency.is_empty() {
        return Vec::new();
    }
    const STEPS_PER_NINE: u32 = 8;
    // With n samples, percentiles past 1 - 1/n all read the max.
    let max_nines = (latency.len() as f64).log10().clamp(1.0, 5.0);
    let service_at = |q: f64| {
        if service.is_empty() {
            0.0
        } else {
            ms(service.value_at_quantile(q))
        }
    };
    let mut points: Vec<DistributionPoint> = (0..)
        .map(|i| f64::from(i) / f64::from(STEPS_PER_NINE))
        .take_while(|x| *x <= max_nines + 1e-9)
        .map(|x| {
            let q = 1.0 - 10f64.powf(-x);
            DistributionPoint {
                percentile: q * 100.0,
                latency_ms: ms(latency.value_at_quantile(q)),
                service_ms: service_at(q),
            }
        })
        .collect();
    points.push(DistributionPoint {
        percentile: 100.0,
        latency_ms: ms(latency.max()),
        service_ms: if service.is_empty() {
            0.0
        } else {
            ms(service.max())
        },
    });
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(values_us: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut h = Histogram::<u64>::new(3).expect("3 significant digits is valid");
        for v in values_us {
            h.record(v)
                .expect("auto-resizing histogram records any value");
        }
        h
    }

    #[test]
    fn percentiles_are_milliseconds_of_microsecond_histograms() {
        // 1..=1000 ms in microseconds.
        let h = histogram((1..=1000).map(|ms| ms * 1000));
        let p = Percentiles::from_histogram(&h);
        assert_eq!(p.count, 1000);
        let close = |got: Option<f64>, want: f64| {
            let got = got.expect("recorded");
            assert!((got - want).abs() / want < 0.002, "got {got}, want {want}");
        };
        close(p.p50_ms, 500.0);
        close(p.p90_ms, 900.0);
        close(p.p99_ms, 990.0);
        close(p.p999_ms, 999.0);
        close(p.max_ms, 1000.0);
        assert_eq!(p.at(99.0), p.p99_ms);
        assert_eq!(p.at(42.0), None);
    }

    #[test]
    fn empty_histogram_has_no_percentiles() {
        let p = Percentiles::from_histogram(&histogram([]));
        assert_eq!(p, Percentiles::default());
        assert!(distribution_from_histograms(&histogram([]), &histogram([])).is_empty());
    }

    #[test]
    fn distribution_rises_on_the_nines_scale_and_ends_at_max() {
        let latency = histogram((1..=10_000).map(|i| i * 10));
        let service = histogram((1..=10_000).map(|i| i * 5));
        let d = distribution_from_histograms(&latency, &service);
        assert_eq!(d.first().map(|p| p.percentile), Some(0.0));
        let last = d.last().expect("not empty");
        assert_eq!(last.percentile, 100.0);
        assert!((last.latency_ms - 100.0).abs() < 0.1);
        assert!(d.windows(2).all(|w| w[0].percentile < w[1].percentile
            && w[0].latency_ms <= w[1].latency_ms
            && w[0].service_ms <= w[1].service_ms));
        // 10,000 samples resolve 4 nines: 99.99 is the last point before the max.
        let before_max = d[d.len() - 2].percentile;
        assert!((before_max - 99.99).abs() < 1e-6, "{before_max}");
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
    }
}
