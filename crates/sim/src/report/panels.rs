//! What the report draws (DESIGN §7 outputs): the chart panels for one
//! scenario (`sim run`) or several side by side (`sim compare`).

use crate::output::{ScenarioResult, REGIONS};

use super::charts::{
    palette, positive_extent, Body, Chart, LegendEntry, Lines, Series, Swatch, Ticks, GRID_SIZE, SIZE,
};
use super::human;
use super::stats::{operator_counts, region_title, Charted, Histogram, ScenarioBands};

/// A USD price whose highest value is this many times its lowest is drawn
/// on a log axis.
const LOG_AXIS_SPAN: f64 = 30.0;

/// Bins of the operator profit histogram.
pub(crate) const PROFIT_BINS: usize = 40;

/// One panel's short explanation, shown under it in the HTML report.
pub(crate) struct Panel {
    pub chart: Chart,
    pub caption: String,
}

fn banded(s: &ScenarioResult) -> bool {
    s.runs.len() > 1
}

fn runs_phrase(scenarios: &[ScenarioResult]) -> String {
    let counts: Vec<usize> = scenarios.iter().map(|s| s.runs.len()).collect();
    let max = counts.iter().copied().max().unwrap_or(0);
    let min = counts.iter().copied().min().unwrap_or(0);
    let runs = if min == max { human::count(max as f64) } else { format!("{min}–{max}") };
    if max > 1 {
        format!("median of {runs} runs per epoch; shaded band: 10th–90th percentile across runs")
    } else {
        "one run".to_string()
    }
}

/// What a point is, where it is not one epoch: a run longer than
/// [`super::stats::MAX_CHART_POINTS`] epochs is drawn in buckets of
/// consecutive epochs, each point their mean, and a day without liquidity
/// among two read as 50 % with nothing to say so.
fn bucket_phrase(scenarios: &[ScenarioResult]) -> String {
    // The bucket each scenario's charts were built with.
    let buckets: Vec<usize> =
        scenarios.iter().map(|s| s.runs.iter().map(|r| r.chart.epochs_per_point).max().unwrap_or(1)).collect();
    let (fewest, most) = (buckets.iter().copied().min().unwrap_or(1), buckets.iter().copied().max().unwrap_or(1));
    match (fewest, most) {
        (_, 1) => String::new(),
        (fewest, most) if fewest == most => format!(" · each point the mean of {most} epochs"),
        (_, most) => format!(" · each point the mean of up to {most} epochs"),
    }
}

fn subtitle(scenarios: &[ScenarioResult]) -> String {
    let bucket = bucket_phrase(scenarios);
    match scenarios {
        [one] => format!("Scenario \u{201c}{}\u{201d} · {}{bucket}", one.name, runs_phrase(scenarios)),
        many => format!("{} scenarios side by side · {}{bucket}", many.len(), runs_phrase(scenarios)),
    }
}

fn band_entry(scenarios: &[ScenarioResult]) -> Option<LegendEntry> {
    scenarios.iter().any(banded).then(|| LegendEntry {
        label: "p10–p90 across runs".to_string(),
        color: super::charts::PALETTE[7],
        swatch: Swatch::Band,
    })
}

/// A chart with one line per scenario of `series`.
#[allow(clippy::too_many_arguments)]
fn per_scenario(
    scenarios: &[ScenarioResult],
    bands: &[ScenarioBands],
    stem: &'static str,
    title: &str,
    y_label: &str,
    series: Charted,
    (y_from_zero, y_ticks): (bool, Ticks),
    caption: &str,
) -> Panel {
    let lines = scenario_lines(scenarios, bands, series);
    // A price that crashes or soars spans decades: on a linear axis the
    // low scenario becomes a flat line on zero, so such prices go on a log
    // axis.
    let y_log = y_ticks == Ticks::Usd && positive_extent(&lines).is_some_and(|(lo, hi)| hi / lo >= LOG_AXIS_SPAN);
    let legend = scenario_legend(scenarios);
    Panel {
        chart: Chart {
            stem,
            title: title.to_string(),
            subtitle: subtitle(scenarios),
            legend,
            body: Body::Lines(Lines {
                y_label: y_label.to_string(),
                series: lines,
                y_from_zero,
                y_ceiling: None,
                y_show_down_to: None,
                y_ticks,
                y_log,
            }),
            size: SIZE,
        },
        caption: caption.to_string(),
    }
}

/// One line of `series` per scenario, in its colour.
fn scenario_lines(scenarios: &[ScenarioResult], bands: &[ScenarioBands], series: Charted) -> Vec<Series> {
    (scenarios.iter().enumerate().zip(bands))
        .map(|((i, s), b)| Series { color: palette(i), dashed: false, banded: banded(s), points: b.band(series).to_vec() })
        .collect()
}

/// One line swatch per scenario, then the p10–p90 band entry if drawn.
fn scenario_legend(scenarios: &[ScenarioResult]) -> Vec<LegendEntry> {
    let mut legend: Vec<LegendEntry> = scenarios
        .iter()
        .enumerate()
        .map(|(i, s)| LegendEntry { label: s.name.clone(), color: palette(i), swatch: Swatch::Line })
        .collect();
    legend.extend(band_entry(scenarios));
    legend
}

/// Plain lines from zero with number ticks: what most panels draw.
fn plain_lines(y_label: &str, series: Vec<Series>) -> Lines {
    Lines {
        y_label: y_label.to_string(),
        series,
        y_from_zero: true,
        y_ceiling: None,
        y_show_down_to: None,
        y_ticks: Ticks::Number,
        y_log: false,
    }
}

/// One scenario: a line per region. Several: small multiples, one cell per
/// region with a line per scenario.
fn per_region(
    scenarios: &[ScenarioResult],
    bands: &[ScenarioBands],
    stem: &'static str,
    (title, grid_title): (&str, &str),
    y_label: &str,
    series: fn(usize) -> Charted,
    caption: &str,
) -> Panel {
    let (legend, body, size) = if let ([one], [one_bands]) = (scenarios, bands) {
        let lines = (0..REGIONS.len())
            .map(|r| Series {
                color: palette(r),
                dashed: false,
                banded: banded(one),
                points: one_bands.band(series(r)).to_vec(),
            })
            .collect();
        let mut legend: Vec<LegendEntry> = (0..REGIONS.len())
            .map(|r| LegendEntry { label: region_title(r), color: palette(r), swatch: Swatch::Line })
            .collect();
        legend.extend(band_entry(scenarios));
        (legend, Body::Lines(plain_lines(y_label, lines)), SIZE)
    } else {
        let cells = (0..REGIONS.len())
            .map(|r| {
                (region_title(r), plain_lines(y_label, scenario_lines(scenarios, bands, series(r))))
            })
            .collect();
        (scenario_legend(scenarios), Body::Grid(cells), GRID_SIZE)
    };
    let title = if scenarios.len() > 1 { grid_title } else { title }.to_string();
    Panel {
        chart: Chart { stem, title, subtitle: subtitle(scenarios), legend, body, size },
        caption: caption.to_string(),
    }
}

fn mint_burn(scenarios: &[ScenarioResult], bands: &[ScenarioBands]) -> Panel {
    let mut series = Vec::new();
    let mut legend = Vec::new();
    let single = scenarios.len() == 1;
    for ((i, s), b) in scenarios.iter().enumerate().zip(bands) {
        let (mint_color, burn_color) = if single { (palette(0), palette(3)) } else { (palette(i), palette(i)) };
        let name = |what: &str| if single { what.to_string() } else { format!("{}: {what}", s.name) };
        series.push(Series {
            color: mint_color,
            dashed: false,
            banded: banded(s),
            points: b.band(Charted::MintedTwy).to_vec(),
        });
        series.push(Series {
            color: burn_color,
            dashed: !single,
            banded: banded(s),
            points: b.band(Charted::BurnedTwy).to_vec(),
        });
        legend.push(LegendEntry { label: name("minted"), color: mint_color, swatch: Swatch::Line });
        legend.push(LegendEntry {
            label: name("burned"),
            color: burn_color,
            swatch: if single { Swatch::Line } else { Swatch::Dashed },
        });
    }
    legend.extend(band_entry(scenarios));
    Panel {
        chart: Chart {
            stem: "mint_burn",
            title: "Minted vs burned per epoch".to_string(),
            subtitle: subtitle(scenarios),
            legend,
            body: Body::Lines(plain_lines("TWY per epoch", series)),
            size: SIZE,
        },
        caption: "Tokens minted into the reward pools and tokens burned (buy-and-burn, slashes, token fees) \
                  in each epoch. Where the burn line stays above the mint line, supply shrinks. \
                  The first epoch also pays the genesis epoch's emission, which no node was yet measured \
                  to earn (the ledger carries at most one epoch's forward), hence its spike."
            .to_string(),
    }
}

/// `hist`: the [`super::stats::histogram`] of the scenarios' pooled
/// profits over [`PROFIT_BINS`] bins.
fn operator_profit(scenarios: &[ScenarioResult], hist: Option<Histogram>) -> Panel {
    let legend = scenarios
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (finite, below) = operator_counts(s);
            let detail = if finite == 0 {
                "no operators".to_string()
            } else {
                format!(
                    "{} operators, {} below break-even",
                    human::count(finite as f64),
                    human::percent(below as f64 / finite as f64)
                )
            };
            let label = if scenarios.len() == 1 { detail } else { format!("{} ({detail})", s.name) };
            LegendEntry { label, color: palette(i), swatch: Swatch::Area }
        })
        .collect();
    let runs: usize = scenarios.iter().map(|s| s.runs.len()).sum();
    let subtitle = match scenarios {
        [one] => format!(
            "Scenario \u{201c}{}\u{201d} · every honest operator's average monthly profit, pooled over {} run{}",
            one.name,
            human::count(runs as f64),
            if runs == 1 { "" } else { "s" }
        ),
        many => format!(
            "{} scenarios side by side · every honest operator's average monthly profit, pooled over each scenario's runs",
            many.len()
        ),
    };
    let body = match hist {
        Some(hist) => Body::Histogram {
            x_label: "average monthly profit per operator (USD; outer bins include the 1% tails)".to_string(),
            y_label: "share of operators (%)".to_string(),
            hist,
            colors: (0..scenarios.len()).map(palette).collect(),
        },
        None => Body::Empty("No operator profit data in these runs.".to_string()),
    };
    Panel {
        chart: Chart {
            stem: "operator_profit",
            title: "Operator profit distribution".to_string(),
            subtitle,
            legend,
            body,
            size: SIZE,
        },
        caption: "How many operators make or lose money: each honest operator's average monthly profit over the \
                  time it was active (rewards at the pool price plus USD income, minus costs). Left of the dashed \
                  line, operators lose money and tend to leave."
            .to_string(),
    }
}

fn liquidity(scenarios: &[ScenarioResult], bands: &[ScenarioBands]) -> Panel {
    // Judged on the simulator's own capacity of the nodes online each
    // hour (`engine.rs`, `serve`), not on the ledger's verified figure.
    let caption = "Liquidity: the share of each epoch's hours in which the nodes online in a region, each \
                   serving at most 80% of its capacity, covered the region's demand (100% = always). It uses \
                   the nodes' own capacity, not the verified capacity the ledger measured.";
    if let [_] = scenarios {
        let mut panel = per_region(
            scenarios,
            bands,
            "liquidity",
            ("Liquidity by region", "Liquidity by region (% of hours demand was covered)"),
            "% of hours demand was covered",
            Charted::LiquidityPercent,
            caption,
        );
        if let Body::Lines(lines) = &mut panel.chart.body {
            lines.y_from_zero = false;
            lines.y_ceiling = Some(100.0);
            lines.y_show_down_to = Some(90.0);
            lines.y_ticks = Ticks::Percent;
        }
        panel
    } else {
        let mut panel = per_scenario(
            scenarios,
            bands,
            "liquidity",
            "Liquidity of the worst-served region",
            "% of hours demand was covered",
            Charted::WorstLiquidityPercent,
            (false, Ticks::Percent),
            &format!("{caption} Each line follows, epoch by epoch, whichever region had the lowest liquidity."),
        );
        if let Body::Lines(lines) = &mut panel.chart.body {
            lines.y_ceiling = Some(100.0);
            lines.y_show_down_to = Some(90.0);
            lines.y_ticks = Ticks::Percent;
        }
        panel
    }
}

/// Every panel of the report, in display order: `bands`, each scenario's
/// ([`ScenarioBands::of`]); `profit_histogram`, their pooled operator
/// profits' over [`PROFIT_BINS`] bins.
pub(crate) fn panels(
    scenarios: &[ScenarioResult],
    bands: &[ScenarioBands],
    profit_histogram: Option<Histogram>,
) -> Vec<Panel> {
    vec![
        per_scenario(
            scenarios,
            bands,
            "price",
            "Token price",
            "USD per TWY",
            Charted::PriceUsd,
            (true, Ticks::Usd),
            "The pool price of the token in USD.",
        ),
        per_scenario(
            scenarios,
            bands,
            "supply",
            "Circulating supply",
            "TWY",
            Charted::CirculatingTwy,
            (true, Ticks::Number),
            "Tokens outside the pool, stakes, unbonding and vesting.",
        ),
        mint_burn(scenarios, bands),
        per_region(
            scenarios,
            bands,
            "nodes",
            ("Nodes by region", "Active nodes by region"),
            "nodes",
            Charted::Nodes,
            "Active nodes in each macro-region.",
        ),
        per_region(
            scenarios,
            bands,
            "capacity",
            ("Verified capacity online by region", "Verified capacity online by region (Gbit/s)"),
            "Gbit/s",
            Charted::VerifiedCapacityGbps,
            "The capacity the ledger verified online in each macro-region at each epoch's end, Gbit/s \
             (measured by the oracles; the nodes of one /24 or /48 count as one).",
        ),
        operator_profit(scenarios, profit_histogram),
        per_scenario(
            scenarios,
            bands,
            "consumer_price",
            "Consumer price per GB",
            "USD per GB",
            Charted::ConsumerPriceUsdPerGb,
            (true, Ticks::Usd),
            "What consumers paid per GB served, on average over the epoch.",
        ),
        liquidity(scenarios, bands),
    ]
}
