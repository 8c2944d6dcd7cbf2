//! Request rate, latency and errors per service, from the router's own metrics: every
//! [`SAMPLE_EVERY`] the server reads the router's Prometheus text, takes the difference from
//! the previous reading, and keeps one point per service (rate, error share, p50/p95/p99
//! from the latency histogram) in a ring of an hour. Pages draw them as small inline SVGs.
//!
//! A service gets a ring only once it has had a request, so idle services cost one counter
//! snapshot each.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// How often the metrics are sampled.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Points kept per service: an hour.
const POINTS: usize = 360;
/// Services followed at most (the rest are not charted).
const MAX_SERVICES: usize = 20_000;

/// One service's counters at one reading.
#[derive(Debug, Clone, Default, PartialEq)]
struct Counters {
    requests: u64,
    errors: u64,
    /// `(upper bound in seconds, cumulative count)`, ascending; the last is `+Inf`.
    buckets: Vec<(f64, u64)>,
}

/// One point of a chart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Point {
    /// When it was taken (unix seconds).
    pub at: i64,
    /// Requests per second since the previous point.
    pub rate: f32,
    /// Share of 5xx answers, in percent (`None` without requests).
    pub errors: Option<f32>,
    /// Latency percentiles in milliseconds (`None` without requests).
    pub p50: Option<f32>,
    pub p95: Option<f32>,
    pub p99: Option<f32>,
}

#[derive(Default)]
struct State {
    last: HashMap<String, Counters>,
    last_at: Option<i64>,
    series: HashMap<String, VecDeque<Point>>,
    generation: u64,
}

/// The charts of every service.
#[derive(Default)]
pub(crate) struct Charts {
    state: Mutex<State>,
}

/// Reads the router's counters per service from its Prometheus text.
fn parse(text: &str) -> HashMap<String, Counters> {
    let mut services: HashMap<String, Counters> = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let labels = parse_labels(labels);
        let Some(service) = labels.get("service") else {
            continue;
        };
        if services.len() >= MAX_SERVICES && !services.contains_key(service.as_str()) {
            continue;
        }
        let counters = services.entry(service.clone()).or_default();
        let count = value.max(0.0) as u64;
        match name {
            "paz_router_requests_total" => {
                counters.requests += count;
                if labels.get("code").is_some_and(|c| c.starts_with('5')) {
                    counters.errors += count;
                }
            }
            "paz_router_request_duration_seconds_bucket" => {
                let bound = match labels.get("le").map(String::as_str) {
                    Some("+Inf") => f64::INFINITY,
                    Some(le) => match le.parse() {
                        Ok(bound) => bound,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                counters.buckets.push((bound, count));
            }
            _ => {}
        }
    }
    for counters in services.values_mut() {
        counters
            .buckets
            .sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    }
    services
}

/// `a="x",b="y"` (with `\"`, `\\` and `\n` escapes) as a map.
fn parse_labels(text: &str) -> HashMap<String, String> {
    let mut labels = HashMap::new();
    let mut chars = text.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let key = key.trim().trim_start_matches(',').trim().to_owned();
        if key.is_empty() || chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                other => value.push(other),
            }
        }
        labels.insert(key, value);
    }
    labels
}

/// The `q` quantile (0..1) of a histogram of cumulative `(bound, count)` buckets, in
/// seconds, interpolated within its bucket as Prometheus does.
fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for &(bound, count) in buckets {
        if count as f64 >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let within = (count - lower.1) as f64;
            let fraction = if within > 0.0 {
                (rank - lower.1 as f64) / within
            } else {
                1.0
            };
            return Some(lower.0 + (bound - lower.0) * fraction);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

impl Charts {
    /// Takes a reading of the router's metrics at `now`.
    pub fn sample(&self, text: &str, now: jiff::Timestamp) {
        let current = parse(text);
        let at = now.as_second();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = state.last_at.map(|last| (at - last).max(1) as f64);
        for (service, counters) in &current {
            let Some(previous) = state.last.get(service) else {
                continue;
            };
            let Some(elapsed) = elapsed else { continue };
            // A counter that went down means the router restarted: start over.
            let requests = counters.requests.saturating_sub(previous.requests);
            if requests == 0 && !state.series.contains_key(service) {
                continue;
            }
            let errors = counters.errors.saturating_sub(previous.errors);
            let delta: Vec<(f64, u64)> = counters
                .buckets
                .iter()
                .map(|&(bound, count)| {
                    let before = previous
                        .buckets
                        .iter()
                        .find(|(b, _)| *b == bound)
                        .map_or(0, |(_, c)| *c);
                    (bound, count.saturating_sub(before))
                })
                .collect();
            let ms = |q| quantile(&delta, q).map(|s| (s * 1000.0) as f32);
            let point = Point {
                at,
                rate: (requests as f64 / elapsed) as f32,
                errors: (requests > 0).then(|| (errors as f64 * 100.0 / requests as f64) as f32),
                p50: ms(0.5),
                p95: ms(0.95),
                p99: ms(0.99),
            };
            let series = state.series.entry(service.clone()).or_default();
            if series.len() == POINTS {
                series.pop_front();
            }
            series.push_back(point);
        }
        state
            .series
            .retain(|service, _| current.contains_key(service));
        state.last = current;
        state.last_at = Some(at);
        state.generation += 1;
    }

    /// A number that changes with every reading (the live stream redraws charts on it).
    pub fn generation(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .generation
    }

    /// The points of `service` in the last hour, oldest first.
    pub fn points(&self, service: &str) -> Vec<Point> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .series
            .get(service)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The newest request rate of `service`, if it has one.
    pub fn rate(&self, service: &str) -> Option<f32> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.series.get(service)?.back().map(|p| p.rate)
    }
}

/// A line of a chart: its CSS class and its values.
pub(crate) struct Line<'a> {
    pub class: &'a str,
    pub values: Vec<(i64, Option<f32>)>,
}

const WIDTH: f32 = 300.0;
const HEIGHT: f32 = 72.0;

/// A small SVG chart of `lines` over the hour before `now` (or since their first point, if
/// that is later, but at least a minute), scaled to a round number at or
/// above the largest value (returned with it); `label` is its accessible description.
pub(crate) fn svg(lines: &[Line<'_>], now: i64, label: &str) -> (String, f32) {
    let max = lines
        .iter()
        .flat_map(|l| l.values.iter().filter_map(|(_, v)| *v))
        .fold(0.0f32, f32::max);
    let top = nice_ceiling(max);
    // The hour before `now`, or less while there is less: a new service's first minutes
    // fill the chart instead of a sliver at its right edge.
    let first = lines
        .iter()
        .filter_map(|l| l.values.first().map(|(at, _)| *at))
        .min()
        .unwrap_or(now);
    let start = first.clamp(now - 3600, now - 60);
    let span = (now - start) as f32;
    let x = |at: i64| ((at - start) as f32 / span * WIDTH).clamp(0.0, WIDTH);
    let y = |v: f32| HEIGHT - (v / top).clamp(0.0, 1.0) * (HEIGHT - 4.0) - 1.0;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" preserveAspectRatio=\"none\" \
         role=\"img\" aria-label=\"{}\"><title>{}</title>",
        escape(label),
        escape(label)
    );
    for fraction in [0.5f32, 1.0] {
        let gy = y(top * fraction);
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"0\" x2=\"{WIDTH}\" y1=\"{gy:.1}\" y2=\"{gy:.1}\"/>"
        );
    }
    for line in lines {
        // A gap in the data (no point for a while, or no requests) breaks the line.
        let mut path = String::new();
        let mut previous: Option<i64> = None;
        let mut alone = false;
        for &(at, value) in &line.values {
            match value {
                Some(v) => {
                    let jump = previous.is_none_or(|p| at - p > 3 * SAMPLE_EVERY.as_secs() as i64);
                    if jump && alone {
                        // A point with no neighbour: a dot (a round cap on a zero-length line).
                        path.push_str("l0,0");
                    }
                    let _ = write!(
                        path,
                        "{}{:.1},{:.1}",
                        if jump { "M" } else { "L" },
                        x(at),
                        y(v)
                    );
                    alone = jump;
                    previous = Some(at);
                }
                None => {
                    if alone {
                        path.push_str("l0,0");
                    }
                    alone = false;
                    previous = None;
                }
            }
        }
        if alone {
            path.push_str("l0,0");
        }
        if !path.is_empty() {
            let _ = write!(
                out,
                "<path class=\"{}\" d=\"{path}\" vector-effect=\"non-scaling-stroke\"/>",
                line.class
            );
        }
    }
    out.push_str("</svg>");
    (out, top)
}

/// The smallest of 1, 2, 5 × 10^n at or above `value` (at least 1).
fn nice_ceiling(value: f32) -> f32 {
    if value <= 1.0 {
        return 1.0;
    }
    let magnitude = 10f32.powf(value.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        if step * magnitude >= value {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

/// A number with at most one decimal, without a trailing `.0`.
pub(crate) fn trim_number(value: f32) -> String {
    if value >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(requests_200: u64, requests_500: u64, fast: u64, slow: u64) -> String {
        let total = fast + slow;
        format!(
            "# HELP x\n\
             paz_router_requests_total{{service=\"web\",code=\"200\"}} {requests_200}\n\
             paz_router_requests_total{{service=\"web\",code=\"503\"}} {requests_500}\n\
             paz_router_request_duration_seconds_bucket{{service=\"web\",le=\"0.001\"}} {fast}\n\
             paz_router_request_duration_seconds_bucket{{service=\"web\",le=\"0.1\"}} {total}\n\
             paz_router_request_duration_seconds_bucket{{service=\"web\",le=\"+Inf\"}} {total}\n\
             paz_router_request_duration_seconds_bucket{{service=\"idle\",le=\"+Inf\"}} 0\n\
             paz_router_in_flight{{service=\"web\"}} 0\n"
        )
    }

    #[test]
    fn readings_become_rates_error_shares_and_percentiles() {
        let charts = Charts::default();
        let t0 = jiff::Timestamp::from_second(1_000_000).unwrap();
        charts.sample(&text(0, 0, 0, 0), t0);
        assert!(
            charts.points("web").is_empty(),
            "one reading makes no point"
        );
        let t1 = jiff::Timestamp::from_second(1_000_010).unwrap();
        charts.sample(&text(90, 10, 50, 50), t1);
        let points = charts.points("web");
        assert_eq!(points.len(), 1);
        let p = points[0];
        assert_eq!(p.rate, 10.0);
        assert_eq!(p.errors, Some(10.0));
        // Half the requests took at most 1 ms: the median is at the bucket's top.
        assert!((p.p50.unwrap() - 1.0).abs() < 0.01, "{p:?}");
        assert!(p.p99.unwrap() > 90.0 && p.p99.unwrap() <= 100.0, "{p:?}");
        assert!(
            charts.points("idle").is_empty(),
            "no ring for a service without requests"
        );
        assert_eq!(charts.rate("web"), Some(10.0));
        assert!(charts.generation() >= 2);
    }

    #[test]
    fn labels_with_escapes_parse() {
        let labels = parse_labels(r#"service="a\"b",code="200""#);
        assert_eq!(labels["service"], "a\"b");
        assert_eq!(labels["code"], "200");
    }

    #[test]
    fn charts_are_svg_with_a_label_and_breaks_in_gaps() {
        let (svg, top) = svg(
            &[Line {
                class: "main",
                values: vec![(100, Some(1.0)), (110, Some(3.0)), (500, Some(2.0))],
            }],
            3700,
            "requests <per> second",
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("aria-label=\"requests &lt;per&gt; second\""));
        assert_eq!(svg.matches('M').count(), 2, "{svg}");
        assert!(
            svg.ends_with("l0,0\" vector-effect=\"non-scaling-stroke\"/></svg>"),
            "the lone last point is a dot: {svg}"
        );
        assert_eq!(top, 5.0);
        assert!(svg.ends_with("</svg>"));
        assert_eq!(nice_ceiling(0.3), 1.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
    }
}
