//! The HTML report: one self-contained file (inline CSS, charts as inline
//! SVG, no script, no external URL), with a summary table of the
//! sustainability metrics per scenario. No timestamp or path goes in, so
//! the same input gives the same bytes.

use std::fmt::Write as _;

use crate::output::ScenarioResult;

use super::charts::palette;
use super::human;
use super::panels::Panel;
use super::stats::{ScenarioStats, Spread};

/// HTML-escapes text for element content and quoted attributes.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

fn hex(c: plotters::style::RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

const CSS: &str = r#"
:root { --text: #1f2328; --muted: #5f6770; --line: #d8dde3; --soft: #f5f7f9; --accent: #0b6bcb; --good: #e7f5ea; --good-text: #1a6b2f; }
* { box-sizing: border-box; }
html { background: #eef1f4; }
body { margin: 0; color: var(--text); font: 16px/1.5 system-ui, -apple-system, "Segoe UI", "Noto Sans", "DejaVu Sans", Roboto, Helvetica, Arial, sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 32px 24px 48px; }
header, section { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 24px 28px; margin-bottom: 24px; }
.kicker { margin: 0; color: var(--muted); font-size: 14px; letter-spacing: .04em; text-transform: uppercase; }
h1 { margin: 4px 0 16px; font-size: 30px; line-height: 1.2; }
h2 { margin: 0 0 8px; font-size: 22px; }
.scenarios { list-style: none; margin: 0; padding: 0; display: flex; flex-wrap: wrap; gap: 8px 28px; }
.scenarios li { display: flex; align-items: baseline; gap: 8px; }
.swatch { display: inline-block; width: 14px; height: 14px; border-radius: 3px; flex: none; transform: translateY(2px); }
.muted, .note { color: var(--muted); }
.note { margin: 0 0 16px; font-size: 14px; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 14px; font-variant-numeric: tabular-nums; }
th, td { padding: 9px 10px; border-bottom: 1px solid var(--line); text-align: right; vertical-align: top; }
thead th { font-size: 12px; font-weight: 600; color: var(--muted); text-transform: uppercase; letter-spacing: .03em; border-bottom: 2px solid var(--line); vertical-align: bottom; }
tbody th { text-align: left; font-weight: 600; min-width: 13em; }
tbody tr:nth-child(even) { background: var(--soft); }
th:first-child, td:first-child { text-align: left; }
td .v { display: block; font-weight: 600; white-space: nowrap; }
td .r { display: block; color: var(--muted); font-size: 12px; }
td.best { background: var(--good); }
td.best .v { color: var(--good-text); }
dl.glossary { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 20px 0 0; font-size: 14px; }
dl.glossary dt { font-weight: 600; }
dl.glossary dd { margin: 0; color: var(--muted); }
nav.toc { display: flex; flex-wrap: wrap; gap: 6px 18px; margin: 0 0 16px; font-size: 15px; }
nav.toc a { color: var(--accent); text-decoration: none; }
nav.toc a:hover { text-decoration: underline; }
figure { margin: 0 0 28px; padding: 0 0 24px; border-bottom: 1px solid var(--line); }
figure:last-of-type { border-bottom: 0; margin-bottom: 0; padding-bottom: 0; }
figure svg { display: block; width: 100%; height: auto; }
figcaption { margin-top: 8px; color: var(--muted); font-size: 14px; }
footer { color: var(--muted); font-size: 13px; text-align: center; }
"#;

/// Which way is better for a column, to mark the best scenario.
#[derive(Clone, Copy)]
enum Better {
    Higher,
    Lower,
    /// Not a matter of better or worse (e.g. the final price).
    Neither,
}

struct Column {
    head: &'static str,
    better: Better,
    value: Value,
}

/// What a column shows of a scenario.
enum Value {
    /// A figure spread over the runs, in this format: its median marks the
    /// best.
    Spread(fn(&ScenarioStats) -> Option<&Spread>, fn(f64) -> String),
    /// Its own key for the best mark and its own cell.
    Own { key: fn(&ScenarioStats) -> Option<f64>, cell: fn(&ScenarioStats) -> String },
}

impl Column {
    /// The scenario's median (for the best mark), `None` if not comparable.
    fn key(&self, s: &ScenarioStats) -> Option<f64> {
        match self.value {
            Value::Spread(of, _) => of(s).map(|s| s.p50),
            Value::Own { key, .. } => key(s),
        }
    }

    fn cell(&self, s: &ScenarioStats) -> String {
        match self.value {
            Value::Spread(of, fmt) => spread_cell(of(s), fmt),
            Value::Own { cell, .. } => cell(s),
        }
    }
}

fn spread_cell(s: Option<&Spread>, fmt: fn(f64) -> String) -> String {
    match s {
        None => "<span class=\"v\">n/a</span>".to_string(),
        Some(s) if s.is_wide() => format!(
            "<span class=\"v\">{}</span><span class=\"r\">{} – {}</span>",
            escape(&fmt(s.p50)),
            escape(&fmt(s.p10)),
            escape(&fmt(s.p90))
        ),
        Some(s) => format!("<span class=\"v\">{}</span>", escape(&fmt(s.p50))),
    }
}

fn burn_cell(s: &ScenarioStats) -> String {
    let mut cell = match s.burn_ge_mint_epoch_median {
        Some(e) => format!("<span class=\"v\">epoch {}</span>", human::count(e)),
        None => "<span class=\"v\">never</span>".to_string(),
    };
    if let Some(d) = s.burn_ge_mint_day_median {
        let _ = write!(cell, "<span class=\"r\">day {}</span>", human::count(d));
    }
    let reached = s.runs - s.burn_ge_mint_never_runs;
    if s.burn_ge_mint_never_runs > 0 && reached > 0 {
        let _ = write!(cell, "<span class=\"r\">reached in {reached} of {} runs</span>", s.runs);
    }
    cell
}

fn columns() -> Vec<Column> {
    vec![
        Column {
            head: "Burn ≥ mint from",
            better: Better::Lower,
            value: Value::Own {
                key: |s| if s.runs == 0 { None } else { Some(s.burn_ge_mint_epoch_median.unwrap_or(f64::INFINITY)) },
                cell: burn_cell,
            },
        },
        Column {
            head: "Worst regional liquidity",
            better: Better::Higher,
            value: Value::Spread(|s| s.worst_regional_liquidity.as_ref(), human::percent),
        },
        Column {
            head: "Operator retention",
            better: Better::Higher,
            value: Value::Spread(|s| s.operator_retention.as_ref(), human::percent),
        },
        Column {
            head: "Price drawdown",
            better: Better::Lower,
            value: Value::Spread(|s| s.price_drawdown.as_ref(), human::percent),
        },
        // Lower is better for the network: the attack that lost the most
        // is marked. Scenarios without attackers have no key, so a missing
        // value is never the best, and an attack alone beside them is not
        // either (`best_marks` wants two values).
        Column {
            head: "Attacker profit",
            better: Better::Lower,
            value: Value::Own {
                key: |s| s.attacker_profit_usd.as_ref().map(|s| s.p50),
                cell: |s| match &s.attacker_profit_usd {
                    None => "<span class=\"v\">no attacker</span>".to_string(),
                    some => spread_cell(some.as_ref(), human::usd),
                },
            },
        },
        Column {
            head: "Honest oracles slashed",
            better: Better::Lower,
            value: Value::Spread(|s| s.honest_oracles_slashed.as_ref(), human::count),
        },
        // The supply's two sides over the run, which docs/economics.md's
        // table leads with: only summary.json had them.
        Column {
            head: "Tokens minted",
            better: Better::Neither,
            value: Value::Spread(|s| s.total_minted_twy.as_ref(), human::twy),
        },
        Column {
            head: "Tokens burned",
            better: Better::Neither,
            value: Value::Spread(|s| s.total_burned_twy.as_ref(), human::twy),
        },
        Column {
            head: "Final price",
            better: Better::Neither,
            value: Value::Spread(|s| s.final_price_usd.as_ref(), human::usd),
        },
        Column {
            head: "Final nodes",
            better: Better::Higher,
            value: Value::Spread(|s| s.final_nodes.as_ref(), human::count),
        },
        Column {
            head: "Consumer price per GB",
            better: Better::Lower,
            value: Value::Spread(|s| s.consumer_price_usd_per_gb.as_ref(), human::usd),
        },
    ]
}

/// For each column, which rows hold its best value (none when all tie or
/// there is only one scenario).
fn best_marks(stats: &[ScenarioStats], columns: &[Column]) -> Vec<Vec<bool>> {
    let mut marks = vec![vec![false; columns.len()]; stats.len()];
    if stats.len() < 2 {
        return marks;
    }
    for (c, col) in columns.iter().enumerate() {
        let keys: Vec<Option<f64>> = stats.iter().map(|s| col.key(s).filter(|k| !k.is_nan())).collect();
        let best = match col.better {
            Better::Neither => continue,
            Better::Higher => keys.iter().flatten().copied().fold(f64::NEG_INFINITY, f64::max),
            Better::Lower => keys.iter().flatten().copied().fold(f64::INFINITY, f64::min),
        };
        let worst = match col.better {
            Better::Higher => keys.iter().flatten().copied().fold(f64::INFINITY, f64::min),
            _ => keys.iter().flatten().copied().fold(f64::NEG_INFINITY, f64::max),
        };
        // Only a real difference earns the mark: not all tied, and the
        // best at least 1% (relative) away from the worst.
        let material = worst.is_infinite() || (best - worst).abs() > 0.01 * best.abs().max(worst.abs());
        let n_best = keys.iter().filter(|k| **k == Some(best)).count();
        if !best.is_finite() || n_best == keys.len() || !material {
            continue;
        }
        for (r, k) in keys.iter().enumerate() {
            marks[r][c] = *k == Some(best);
        }
    }
    marks
}

const GLOSSARY: [(&str, &str); 11] = [
    ("Burn ≥ mint from", "The first epoch from which tokens burned matched or beat tokens minted for 30 epochs in a row: the network pays for itself from then on."),
    ("Worst regional liquidity", "The lowest liquidity of any region with demand in any one of the last 90 epochs: the share of that epoch's hours in which the region's online nodes, each serving at most 80% of its capacity, covered its demand (100% = every hour)."),
    ("Operator retention", "Share of the honest operators active in the first 30 epochs who were still active at the end."),
    ("Price drawdown", "The largest fall of the token price from a peak to a later trough."),
    ("Attacker profit", "What the attacks gained over running the same hardware honestly, in USD at the pool price: the sybil farm against one honest node on its line, each liar against an honest twin on its line, minus the stake slashed from liars and colluding oracles, plus what a sandwich trader around the burns gained or lost. Below zero, attacks do not pay; of several scenarios with attackers, the lowest is marked (what is best for the network). \"no attacker\" where the scenario has none."),
    ("Honest oracles slashed", "Oracles outside the attack that lost stake for any reason, per run: a slashing rule's false positives. Zero is the only good value."),
    ("Tokens minted", "All tokens minted over the run: uptime, usage and oracle rewards."),
    ("Tokens burned", "All tokens burned over the run: bought with consumers' USD and burned, the burned part of slashes, and token fees."),
    ("Final price", "The pool price at the end of the run."),
    ("Final nodes", "Active nodes at the end of the run."),
    ("Consumer price per GB", "What consumers paid per GB served in the run's last epoch, in USD."),
];

fn scenario_line(i: usize, scenario: &ScenarioResult, stats: &ScenarioStats) -> String {
    let mut details =
        vec![format!("{} run{}", human::count(stats.runs as f64), if stats.runs == 1 { "" } else { "s" })];
    match (stats.seeds.iter().min(), stats.seeds.iter().max()) {
        (Some(lo), Some(hi)) if lo == hi => details.push(format!("seed {lo}")),
        (Some(lo), Some(hi)) => details.push(format!("seeds {lo}–{hi}")),
        _ => {}
    }
    details.push(format!("{} epochs", human::count(stats.epochs as f64)));
    details.push(format!("{} days", human::count(stats.days)));
    format!(
        "<li><span class=\"swatch\" style=\"background:{}\"></span><strong>{}</strong> <span class=\"muted\">{}</span></li>\n",
        hex(palette(i)),
        escape(&scenario.name),
        escape(&details.join(" · "))
    )
}

/// Makes an SVG document from plotters fit for inlining: no XML prolog,
/// scales with the page, and is announced as an image with its title.
fn inline_svg(svg: &str, label: &str) -> String {
    let body = svg.find("<svg").map_or(svg, |i| &svg[i..]);
    body.replacen("<svg ", &format!("<svg role=\"img\" aria-label=\"{}\" ", escape(label)), 1)
}

/// The whole page.
pub(crate) fn page(
    title: &str,
    scenarios: &[ScenarioResult],
    stats: &[ScenarioStats],
    panels: &[Panel],
    svgs: &[String],
) -> String {
    let mut h = String::with_capacity(svgs.iter().map(String::len).sum::<usize>() + 32 * 1024);
    let kind = if scenarios.len() == 1 { "sim run" } else { "sim compare" };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{t}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n\
         <header>\n<p class=\"kicker\">Tollway tokenomics simulator · {kind}</p>\n<h1>{t}</h1>\n<ul class=\"scenarios\">\n",
        t = escape(title)
    );
    for (i, (scenario, s)) in scenarios.iter().zip(stats).enumerate() {
        h.push_str(&scenario_line(i, scenario, s));
    }
    h.push_str("</ul>\n</header>\n");

    // The summary table.
    let cols = columns();
    let marks = best_marks(stats, &cols);
    h.push_str("<section id=\"summary\">\n<h2>Sustainability summary</h2>\n");
    h.push_str(
        "<p class=\"note\">Median over each scenario's runs; the smaller figures under a value are the 10th–90th \
         percentile across runs.",
    );
    if scenarios.len() > 1 {
        h.push_str(" A green cell is the best value in its column (when it is at least 1% better than the worst).");
    }
    h.push_str("</p>\n<div class=\"table-wrap\">\n<table>\n<thead>\n<tr><th scope=\"col\">Scenario</th>");
    for col in &cols {
        let _ = write!(h, "<th scope=\"col\">{}</th>", escape(col.head));
    }
    h.push_str("</tr>\n</thead>\n<tbody>\n");
    for (r, s) in stats.iter().enumerate() {
        let _ = write!(
            h,
            "<tr id=\"summary-{r}\"><th scope=\"row\"><span class=\"swatch\" style=\"background:{}\"></span> {}</th>",
            hex(palette(r)),
            escape(&s.name)
        );
        if s.runs == 0 {
            let _ = write!(h, "<td colspan=\"{}\">no runs</td>", cols.len());
        } else {
            for (c, col) in cols.iter().enumerate() {
                let class = if marks[r][c] { " class=\"best\"" } else { "" };
                let _ = write!(h, "<td{class}>{}</td>", col.cell(s));
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n</div>\n<dl class=\"glossary\">\n");
    for (term, meaning) in GLOSSARY {
        let _ = writeln!(h, "<dt>{}</dt><dd>{}</dd>", escape(term), escape(meaning));
    }
    h.push_str("</dl>\n</section>\n");

    // The charts.
    h.push_str("<section id=\"charts\">\n<h2>Charts</h2>\n<nav class=\"toc\">");
    for p in panels {
        let _ = write!(h, "<a href=\"#chart-{}\">{}</a>", p.chart.stem, escape(&p.chart.title));
    }
    h.push_str("</nav>\n");
    for (p, svg) in panels.iter().zip(svgs) {
        let _ = write!(
            h,
            "<figure id=\"chart-{stem}\">\n{svg}<figcaption>{caption} <span class=\"files\">Also as {stem}.png and {stem}.svg.</span></figcaption>\n</figure>\n",
            stem = p.chart.stem,
            svg = inline_svg(svg, &p.chart.title),
            caption = escape(&p.caption),
        );
    }
    h.push_str("</section>\n<footer>Generated by the Tollway simulator. The same input gives the same report, byte for byte.</footer>\n</main>\n</body>\n</html>\n");
    h
}
