//! `allot report budget --svg FILE`: the burn-down chart of a budget, drawn with plotters'
//! SVG backend. Units over time: consumed to date (from granted at the term's start to what
//! is left now, a straight line — the budget holds no daily history), the projections at
//! the 7- and 30-day burn rates (the server's forecast paths: arrivals step them up,
//! expiries down), and marked: now, each run-out (with its date), scheduled allotments and
//! grant expiries, and the term's end (with its date).

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use chrono::{DateTime, Utc};
use plotters::{
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use crate::proto;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 540;

fn micros(ts: Option<&prost_types::Timestamp>) -> Option<i64> {
    ts.map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000)
}

fn date(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn units(text: &str) -> f64 {
    text.parse().unwrap_or(0.0)
}

/// A forecast's path as (time, units); a roll-up's is the sum of its lines' (each is
/// straight between its points, so the sum at every line's points is exact).
fn path(
    budget: &proto::Budget,
    pick: fn(&proto::Budget) -> Option<&proto::Forecast>,
) -> Vec<(i64, f64)> {
    let points = |b: &proto::Budget| -> Vec<(i64, f64)> {
        pick(b)
            .map(|f| {
                f.path
                    .iter()
                    .filter_map(|p| Some((micros(p.time.as_ref())?, units(&p.units))))
                    .collect()
            })
            .unwrap_or_default()
    };
    if budget.lines.is_empty() {
        return points(budget);
    }
    let lines: Vec<Vec<(i64, f64)>> = budget.lines.iter().map(points).collect();
    let mut times: Vec<i64> = lines.iter().flatten().map(|(t, _)| *t).collect();
    times.sort_unstable();
    times.dedup();
    times
        .into_iter()
        .map(|t| (t, lines.iter().map(|line| at(line, t)).sum()))
        .collect()
}

/// A path's value at `t` (straight between points; the last value after its end).
fn at(path: &[(i64, f64)], t: i64) -> f64 {
    let after = path.partition_point(|(time, _)| *time <= t);
    match (after.checked_sub(1).map(|i| path[i]), path.get(after)) {
        (Some((t0, v0)), Some(&(t1, v1))) if t1 > t0 => {
            v0 + (v1 - v0) * (t - t0) as f64 / (t1 - t0) as f64
        }
        (Some((_, v0)), _) => v0,
        (None, Some((_, v1))) => *v1,
        (None, None) => 0.0,
    }
}

/// Draws `budget`'s burn-down to `file` as SVG.
pub fn write(budget: &proto::Budget, file: &Path) -> Result<()> {
    let now = micros(budget.as_of.as_ref()).ok_or_else(|| anyhow!("the budget has no as_of"))?;
    let end = micros(budget.forecast_end_time.as_ref()).unwrap_or(now);
    let start = micros(budget.term_start_time.as_ref())
        .unwrap_or(now)
        .min(now);
    let term_end = micros(budget.term_end_time.as_ref());
    let p7 = path(budget, |b| b.forecast_7d.as_ref());
    let p30 = path(budget, |b| b.forecast_30d.as_ref());
    let granted = units(&budget.granted);
    let top = p7
        .iter()
        .chain(&p30)
        .map(|(_, v)| *v)
        .chain([granted, units(&budget.remaining)])
        .fold(1.0, f64::max)
        * 1.1;
    let day = 86_400_000_000f64;
    let x = |t: i64| (t - start) as f64 / day;
    let span = x(end).max(1.0);

    let root = SVGBackend::new(file, (WIDTH, HEIGHT)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let title = if budget.wallet_id.is_empty() {
            format!(
                "Budget of {} and sub-accounts ({})",
                budget.account_id, budget.unit
            )
        } else {
            format!("Budget of {} ({})", budget.wallet_id, budget.unit)
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..span * 1.02, 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("date (UTC)")
            .y_desc(format!("{} left", budget.unit))
            .x_label_formatter(&|days| date(start + (days * day) as i64))
            .x_labels(8)
            .draw()?;
        // Labels near the right edge end at their mark instead of starting there.
        let style = |at: f64, size: u32, color: &RGBColor| {
            let anchor = if at > span * 0.75 {
                Pos::new(HPos::Right, VPos::Top)
            } else {
                Pos::new(HPos::Left, VPos::Top)
            };
            ("sans-serif", size).into_font().color(color).pos(anchor)
        };
        let series = |points: &[(i64, f64)]| -> Vec<(f64, f64)> {
            points.iter().map(|(t, v)| (x(*t), *v)).collect()
        };
        chart
            .draw_series(LineSeries::new(
                [(x(start), granted), (x(now), units(&budget.remaining))],
                BLACK.stroke_width(3),
            ))?
            .label(format!("to date: {} consumed", budget.consumed))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.stroke_width(3)));
        for (points, color, name, forecast, runout) in [
            (
                &p7,
                BLUE,
                "7-day rate",
                &budget.forecast_7d,
                &budget.runout_time_7d,
            ),
            (
                &p30,
                RED,
                "30-day rate",
                &budget.forecast_30d,
                &budget.runout_time_30d,
            ),
        ] {
            let rate = forecast
                .as_ref()
                .map(|f| f.burn_rate.clone())
                .unwrap_or_default();
            let label = match micros(runout.as_ref()) {
                Some(t) => format!("{name} ({rate}/day): runs out {}", date(t)),
                None => format!("{name} ({rate}/day): does not run out"),
            };
            chart
                .draw_series(LineSeries::new(series(points), color.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
            if let Some(t) = micros(runout.as_ref()) {
                chart.draw_series([PathElement::new(
                    [(x(t), 0.0), (x(t), top * 0.9)],
                    color.mix(0.5),
                )])?;
                chart.draw_series([Text::new(
                    format!("run-out {}", date(t)),
                    (x(t), top * 0.92),
                    style(x(t), 13, &color),
                )])?;
            }
        }
        let mut marks = vec![(now, format!("now {}", date(now)), BLACK)];
        if let Some(t) = term_end {
            marks.push((t, format!("term end {}", date(t)), GREEN));
        }
        for (t, label, color) in &marks {
            chart.draw_series([PathElement::new(
                [(x(*t), 0.0), (x(*t), top)],
                color.mix(0.6),
            )])?;
            chart.draw_series([Text::new(
                label.clone(),
                (x(*t), top * 0.98),
                style(x(*t), 13, color),
            )])?;
        }
        for event in &budget.events {
            let Some(t) = micros(event.time.as_ref()) else {
                continue;
            };
            // An expiry shows no number: what it takes depends on what burns before it.
            let (label, color) = match event.kind() {
                proto::budget_event::Kind::GrantExpires => ("grant expires".to_string(), MAGENTA),
                _ => (format!("+{}", event.units), GREEN),
            };
            let level = at(&p30, t).max(at(&p7, t));
            chart.draw_series([Circle::new((x(t), level), 4, color.filled())])?;
            chart.draw_series([Text::new(
                label,
                (x(t), level + top * 0.05),
                style(x(t), 11, &color),
            )])?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw()
        .map_err(|err| anyhow!("cannot draw the chart: {err}"))
        .with_context(|| format!("cannot write {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    #[test]
    fn paths_are_straight_between_points_and_roll_ups_add_up() {
        let p = [(0, 10.0), (10, 0.0), (20, 0.0)];
        assert_eq!(at(&p, 5), 5.0);
        assert_eq!(at(&p, 25), 0.0);
        let line = |left: &str| proto::Budget {
            forecast_7d: Some(proto::Forecast {
                path: vec![
                    proto::ForecastPoint {
                        time: ts(0),
                        units: left.into(),
                    },
                    proto::ForecastPoint {
                        time: ts(10),
                        units: "0".into(),
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let total = proto::Budget {
            lines: vec![line("10"), line("20")],
            ..Default::default()
        };
        let sum = path(&total, |b| b.forecast_7d.as_ref());
        assert_eq!(sum, [(0, 30.0), (10_000_000, 0.0)]);
    }
}
