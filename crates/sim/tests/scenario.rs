//! Scenario files and their overrides (`--sweep`, `--days`): what a user
//! who gets one wrong is told.

use tollway_sim::scenario::{self, Scenario};

fn hybrid() -> Scenario {
    let text = scenario::built_in("hybrid").unwrap_or_else(|| panic!("no built-in hybrid"));
    Scenario::from_toml(text).unwrap_or_else(|e| panic!("{e}"))
}

fn err(s: &Scenario, key: &str, value: &str) -> String {
    match s.with_override(key, value) {
        Ok(_) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

/// A value of the wrong type was a TOML parse error "at line 35" of the
/// scenario as we had written it out again, not of the user's file.
#[test]
fn an_override_of_the_wrong_type_names_its_key_not_a_line_of_ours() {
    let s = hybrid();
    expect_test::expect![[r#"
        [
            "scenario `population.operators`: invalid type: floating point `1.5`, expected u32",
            "scenario `run.days`: invalid type: string \"3\", expected u64",
            "scenario parameter: parameter `node_usd_share`: invalid type: string \"0.5\", expected f64",
        ]
    "#]]
    .assert_debug_eq(&[
        err(&s, "population.operators", "1.5"),
        err(&s, "run.days", "\"3\""),
        err(&s, "node_usd_share", "\"0.5\""),
    ]);
}

/// `--sweep operators=…` and `--sweep population.operaters=…` got no
/// hint (the first was looked up among the ledger's parameters only),
/// though a misspelt key is meant to get the names it may have meant.
#[test]
fn a_scenario_key_without_its_section_or_misspelt_gets_the_names_it_may_have_meant() {
    let s = hybrid();
    let no_section = err(&s, "operators", "100");
    assert!(no_section.contains("population.operators"), "{no_section}");
    let both = err(&s, "region_weights", "[1, 1, 1, 1, 1, 1, 1, 1]");
    assert!(both.contains("demand.region_weights or population.region_weights"), "{both}");
    let misspelt = err(&s, "population.operaters", "100");
    assert!(misspelt.contains("no such key in the scenario; [population] has ") && misspelt.contains(" operators,"), "{misspelt}");
    // A ledger parameter's own typo still gets the ledger's suggestions.
    let ledger = err(&s, "uptime_shar", "0.5");
    assert!(ledger.contains("did you mean uptime_share"), "{ledger}");
}

/// The liars had no bound: `liars = 4000000000` joined nodes (and made
/// accounts) without end on the attack's first day, 3 GB in 25 s.
#[test]
fn liars_count_against_the_population_bound() {
    let text = scenario::built_in("sybil-and-liars").unwrap_or_else(|| panic!("no built-in sybil-and-liars"));
    for liars in ["4000000000", "499001"] {
        let e = Scenario::from_toml(&text.replace("liars = 40", &format!("liars = {liars}"))).err().map(|e| e.to_string());
        assert!(e.as_deref().unwrap_or_default().contains("attack.liars"), "{liars}: {e:?}");
    }
    assert!(Scenario::from_toml(&text.replace("liars = 40", "liars = 499000")).is_ok());
}

/// A pool_usd of 0 was reported as `market.pool_twy`, and a diurnal
/// amplitude of 2 as `demand` with the rules of two keys.
#[test]
fn an_invalid_number_names_its_own_key() {
    let text = scenario::built_in("hybrid").unwrap_or_else(|| panic!("no built-in hybrid"));
    for (from, to, want) in [
        ("pool_usd = 4000000", "pool_usd = 0", "scenario `market.pool_usd`: 0: "),
        ("pool_twy = 20000000", "pool_twy = 1e10", "scenario `market.pool_twy`: 10000000000: "),
        ("diurnal_amplitude = 0.5", "diurnal_amplitude = 2", "scenario `demand.diurnal_amplitude`: 2 must be in [0, 1]"),
        ("growth_per_year = 3.0", "growth_per_year = -1", "scenario `demand.growth_per_year`: -1.0 must be"),
    ] {
        assert!(text.contains(from), "{from}");
        let e = Scenario::from_toml(&text.replace(from, to)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(want), "{to}: {e}");
    }
}

/// An attack ending before it starts meant "never ends" to its colluding
/// oracles and "never" to its sandwich trader: refused, with what to write.
#[test]
fn an_attack_must_end_after_it_starts() {
    let text = scenario::built_in("sybil-and-liars").unwrap_or_else(|| panic!("no built-in sybil-and-liars"));
    for end in ["end_day = 10", "end_day = 30"] {
        let e = Scenario::from_toml(&text.replace("end_day = 365", end)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("attack.end_day") && e.contains("must be after start_day (30)"), "{end}: {e}");
    }
    assert!(Scenario::from_toml(&text.replace("end_day = 365", "end_day = 31")).is_ok());
}

/// A list of more values than the key has places for ran with the first
/// ones and dropped the rest without a word: nine region weights, or a
/// capacity given as low, typical and high, ran another experiment than
/// the one written down.
#[test]
fn a_list_of_the_wrong_length_is_refused() {
    let text = scenario::built_in("hybrid").unwrap_or_else(|| panic!("no built-in hybrid"));
    for (from, to, want) in [
        (
            "region_weights = [0.22, 0.10, 0.26, 0.06, 0.06, 0.10, 0.16, 0.04]",
            "region_weights = [0.22, 0.10, 0.26, 0.06, 0.06, 0.10, 0.16, 0.04, 0.5]",
            "invalid length 9, expected an array of 8 values",
        ),
        ("capacity_mbps = [5.0, 300.0]", "capacity_mbps = [5.0, 50.0, 300.0]", "invalid length 3, expected an array of 2 values"),
        ("genesis_stake_twy = [1000.0, 2000.0]", "genesis_stake_twy = [1000.0]", "invalid length 1, expected an array of 2 values"),
    ] {
        assert!(text.contains(from), "{from}");
        let refused = Scenario::from_toml(&text.replace(from, to)).err().map(|e| e.to_string()).unwrap_or_default();
        let key = from.split(' ').next().unwrap_or_default();
        assert!(refused.contains(key) && refused.contains(want), "{to}: {refused}");
    }
    let three = err(&hybrid(), "population.uptime", "[0.5, 0.7, 1.0]");
    assert!(three.contains("population.uptime") && three.contains("invalid length 3, expected an array of 2 values"), "{three}");
    assert_eq!(err(&hybrid(), "population.uptime", "[0.5, 1.0]"), "ok");
}

/// A sweep of a key whose value is a list (`population.uptime`,
/// `capacity_mbps`, `region_weights`) split its values at every comma, so
/// `[0.5, 1.0]` became "[0.5" and " 1.0]": no such sweep could run.
#[test]
fn a_sweep_takes_lists_as_values() {
    let designs = tollway_sim::montecarlo::sweep(&hybrid(), "population.uptime=[0.5, 1.0],[0.9,1.0]")
        .unwrap_or_else(|e| panic!("{e}"));
    let uptimes: Vec<[f64; 2]> = designs.iter().map(|s| s.population.uptime).collect();
    assert_eq!(uptimes, [[0.5, 1.0], [0.9, 1.0]]);
    assert_eq!(designs[0].name, "hybrid population.uptime=[0.5, 1.0]");
    let one = tollway_sim::montecarlo::sweep(&hybrid(), "population.capacity_mbps=[10.0, 100.0]").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].population.capacity_mbps, [10.0, 100.0]);
    // Plain values still split at each comma, and an unclosed list is
    // the value's own error.
    assert_eq!(tollway_sim::montecarlo::sweep(&hybrid(), "uptime_share=0.5,0.6").map(|v| v.len()).ok(), Some(2));
    let refused = tollway_sim::montecarlo::sweep(&hybrid(), "population.uptime=[0.5, 1.0").err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("population.uptime") && refused.contains("[0.5, 1.0"), "{refused}");
}

/// `--sweep x=0.5,0.50` ran the same design twice, as two lines on every
/// chart under two names: values that the scenario reads as one are
/// refused, naming both, whether a ledger parameter (`7d` is `168h`) or
/// a scenario key.
#[test]
fn a_sweep_value_given_twice_in_two_spellings_is_refused_naming_both() {
    for (spec, a, b) in [
        ("uptime_share=0.5,0.6,0.50", "0.5", "0.50"),
        ("vesting=\"7d\",\"0s\",\"168h\"", "\"7d\"", "\"168h\""),
        ("demand.growth_per_year=0.3,3e-1", "0.3", "3e-1"),
    ] {
        let refused = tollway_sim::montecarlo::sweep(&hybrid(), spec).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains(&format!("{a} and {b} are the same value")), "{spec}: {refused:?}");
    }
    assert_eq!(tollway_sim::montecarlo::sweep(&hybrid(), "uptime_share=0.5,0.51").map(|v| v.len()).ok(), Some(2));
}

/// `--sweep uptime_share=` (or a value left out between two commas, or no
/// key) reached the TOML parser, whose answer was "string values must be
/// quoted": each now says which part is missing.
#[test]
fn a_sweep_with_an_empty_value_or_key_says_which() {
    for (spec, says) in [
        ("uptime_share=", "value 1 of 1 is empty"),
        ("uptime_share=0.5,,0.7", "value 2 of 3 is empty"),
        ("uptime_share=0.5, ", "value 2 of 2 is empty"),
        ("=0.5,0.6", "no key before the `=`"),
    ] {
        let refused = tollway_sim::montecarlo::sweep(&hybrid(), spec).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains(says) && refused.contains("key=v1,v2"), "{spec}: {refused:?}");
    }
}

/// A node's price is at most the ledger's $1000 per GiB, $931.32 per GB.
/// Prices up to $1000 per GB were accepted, and a run of them failed in
/// its setup with the ledger's per-GiB limit, naming no key of the file.
#[test]
fn a_node_price_above_the_ledgers_limit_is_refused_by_name() {
    let refused = err(&hybrid(), "population.price_usd_per_gb", "[1.0, 1000.0]");
    assert!(refused.contains("population.price_usd_per_gb") && refused.contains("931.32"), "{refused}");
    let s = hybrid()
        .with_override("population.price_usd_per_gb", "[931.32, 931.32]")
        .and_then(|s| s.with_override("population.operators", "3"))
        .unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = tollway_sim::engine::Sim::new(&s, 1) {
        panic!("{e}");
    }
}

/// Demand is the price over the reference price to the elasticity's
/// minus power: an elasticity of 1e300, or a reference price of 1e300,
/// was accepted and made a region's demand infinite (`inf` in the CSV)
/// from the first day its price was under the reference.
#[test]
fn demand_s_elasticity_and_reference_price_are_bounded() {
    let s = hybrid();
    for (key, value) in [("demand.price_elasticity", "1e300"), ("demand.price_elasticity", "10.5"), ("demand.reference_price_usd_per_gb", "1e300")] {
        let refused = err(&s, key, value);
        assert!(refused.contains(key) && refused.contains("at most"), "{key} = {value}: {refused}");
    }
    assert_eq!(err(&s, "demand.price_elasticity", "10"), "ok");
    assert_eq!(err(&s, "demand.reference_price_usd_per_gb", "931.32"), "ok");
}

/// Four demand and market inputs had no upper bound: 1e300 was accepted
/// for each, and a growth of 1e300 a year grew consumers and demand to
/// `inf` in the CSV within a year (1e300 GB per consumer a day showed a
/// demand of 3e302 Gbit/s). A demand shock's factor was the same. Each is
/// now refused by its key beyond a bound no real scenario needs, and the
/// bound itself is accepted.
#[test]
fn demand_and_market_inputs_are_bounded() {
    let s = hybrid();
    for (key, most, beyond) in [
        ("demand.gb_per_consumer_per_day", "108000", "108001"),
        ("demand.growth_per_year", "9", "9.5"),
        ("market.trader_volume_usd", "9e9", "1e10"),
        ("market.valuation_multiple", "1000", "1000.5"),
        ("market.whale_twy", "1e12", "1.5e12"),
    ] {
        for value in [beyond, "1e300", "inf", "nan"] {
            let refused = err(&s, key, value);
            assert!(refused.starts_with(&format!("scenario `{key}`: ")) && refused.contains("at most"), "{key} = {value}: {refused}");
        }
        assert_eq!(err(&s, key, most), "ok", "{key} = {most}");
    }
    let text = scenario::built_in("demand-shock").unwrap_or_else(|| panic!("no built-in demand-shock"));
    for (factor, refused) in [("1000.0", false), ("1001.0", true), ("1e300", true)] {
        let shocked = text.replace("factor = 0.5", &format!("factor = {factor}"));
        assert_ne!(shocked, text);
        match Scenario::from_toml(&shocked) {
            Ok(_) => assert!(!refused, "factor = {factor} was accepted"),
            Err(e) => assert!(refused && e.to_string().contains("shocks[0].factor"), "factor = {factor}: {e}"),
        }
    }
}

/// A scenario's `[params]` were set one at a time, in the table's
/// (alphabetical) order, each checked against the defaults of the rest:
/// a minimum stake above the default saturation bond, with the bond
/// raised too, or an emission cap below the default first year's
/// emission, with that lowered too, was refused however the file ordered
/// them, though the design is valid.
#[test]
fn related_parameters_in_a_scenario_file_are_checked_together() {
    let text = scenario::built_in("hybrid").unwrap_or_else(|| panic!("no built-in hybrid"));
    for (overrides, check) in [
        (
            "stake_saturation_twy = 5000\nmin_node_stake_twy = 3000\n",
            (|p: &tollway_ledger::Params| p.min_node_stake == tollway_types::Token::units(3000)) as fn(&tollway_ledger::Params) -> bool,
        ),
        ("cap_twy = 40000000\nyear_one_twy = 30000000\n", |p| p.emission_cap == tollway_types::Token::units(40_000_000)),
    ] {
        let edited = text.replace("[params]\n", &format!("[params]\n{overrides}"));
        assert_ne!(edited, text);
        let s = Scenario::from_toml(&edited).unwrap_or_else(|e| panic!("{overrides}: {e}"));
        let p = s.params().unwrap_or_else(|e| panic!("{e}"));
        assert!(check(&p), "{overrides}");
    }
    // Still refused where the two together are not valid.
    let both_wrong = text.replace("[params]\n", "[params]\nstake_saturation_twy = 2500\nmin_node_stake_twy = 3000\n");
    let refused = Scenario::from_toml(&both_wrong).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("stake_saturation_twy") && refused.contains("at least min_node_stake_twy"), "{refused}");
}

/// A sweep's value was checked first against the ledger's defaults, not
/// this scenario's parameters: fixed-emissions (a cap of 1e9 TWY) could
/// not sweep its first year's emission to 2e8 ("exceeds the emission
/// cap", the default cap's 1e8), and a too-short unbonding was said to be
/// shorter than "two epochs (2h)" in a simulator of daily epochs.
#[test]
fn a_sweep_value_is_checked_against_this_scenarios_parameters() {
    let text = scenario::built_in("fixed-emissions").unwrap_or_else(|| panic!("no built-in fixed-emissions"));
    let fixed = Scenario::from_toml(text).unwrap_or_else(|e| panic!("{e}"));
    let designs = tollway_sim::montecarlo::sweep(&fixed, "year_one_twy=100000000,200000000").unwrap_or_else(|e| panic!("{e}"));
    let year_one: Vec<tollway_types::Token> =
        designs.iter().map(|s| s.params().map(|p| p.emission_year_one).unwrap_or_else(|e| panic!("{e}"))).collect();
    assert_eq!(year_one, [tollway_types::Token::units(100_000_000), tollway_types::Token::units(200_000_000)]);
    let refused = err(&hybrid(), "unbonding", "\"1h\"");
    assert!(refused.contains("shorter than two epochs (2d)"), "{refused}");
}

/// A sweep of one end of the uptime share's slide over a file that sets
/// the flat `uptime_share` removed the file's setting altogether: the
/// other end fell back to the ledger's default (0.2) where the file said
/// 0.5, and each design ran another slide than the one written down.
#[test]
fn a_sweep_of_one_end_of_a_flat_uptime_share_keeps_the_other_end() {
    let text = scenario::built_in("hybrid").unwrap_or_else(|| panic!("no built-in hybrid"));
    let flat = Scenario::from_toml(&text.replace("[params]\n", "[params]\nuptime_share = 0.5\n")).unwrap_or_else(|e| panic!("{e}"));
    let designs = tollway_sim::montecarlo::sweep(&flat, "uptime_share_start=0.9").unwrap_or_else(|e| panic!("{e}"));
    let p = designs[0].params().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((p.uptime_share_start_ppm, p.uptime_share_end_ppm), (900_000, 500_000));
    // The flat share over a file's own ends still sets both.
    let ends = Scenario::from_toml(&text.replace("[params]\n", "[params]\nuptime_share_start = 0.9\nuptime_share_end = 0.1\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let designs = tollway_sim::montecarlo::sweep(&ends, "uptime_share=0.4").unwrap_or_else(|e| panic!("{e}"));
    let p = designs[0].params().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((p.uptime_share_start_ppm, p.uptime_share_end_ppm), (400_000, 400_000));
}

/// A scenario's shocks were all named `shocks` in its errors, and an
/// exodus's day and share shared one message: in a file of several
/// shocks, which one, which key and what value was wrong went unsaid.
#[test]
fn a_bad_shock_is_named_by_its_place_and_key_with_its_value() {
    let text = scenario::built_in("demand-shock").unwrap_or_else(|| panic!("no built-in demand-shock"));
    let two = |second: &str| format!("{text}\n[[shocks]]\n{second}\n");
    for (second, want) in [
        ("kind = \"exodus\"\nday = 5\nshare = 1.5", "scenario `shocks[1].share`: 1.5 must be"),
        ("kind = \"exodus\"\nday = 0\nshare = 0.5", "scenario `shocks[1].day`: 0 "),
        ("kind = \"price-crash\"\nday = 0\nsell_twy = 5.0", "scenario `shocks[1].day`: 0 "),
        ("kind = \"demand\"\nstart_day = 9\nend_day = 9\nfactor = 2.0", "scenario `shocks[1].end_day`: 9 must be after start_day (9)"),
        ("kind = \"demand\"\nstart_day = 2\nend_day = 9\nfactor = 1e300", "scenario `shocks[1].factor`: "),
    ] {
        let refused = Scenario::from_toml(&two(second)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.starts_with(want), "{second}: {refused}");
    }
}

/// A scenario's parameters written as params/default.toml lays them out,
/// in sections (`[params.emission]`, or `emission.year_one_twy = …`),
/// were refused: "no parameter named `emission`; the names are those of
/// params/default.toml", a section of which it is.
#[test]
fn parameters_may_be_written_in_their_sections() {
    let text = scenario::built_in("hybrid").unwrap_or_else(|| panic!("no built-in hybrid"));
    for edited in [
        format!("{text}\n[params.emission]\nyear_one_twy = 60000000\n"),
        text.replace("[params]\n", "[params]\nemission.year_one_twy = 60000000\n"),
    ] {
        assert_ne!(edited, text);
        let s = Scenario::from_toml(&edited).unwrap_or_else(|e| panic!("{e}"));
        let p = s.params().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.emission_year_one, tollway_types::Token::units(60_000_000));
        assert_eq!(p.node_usd_share_ppm, 500_000, "the file's other parameters stand");
    }
    let typo = Scenario::from_toml(&format!("{text}\n[params.emission]\nyear_one_tw = 1\n")).err().map(|e| e.to_string());
    assert!(typo.as_deref().unwrap_or_default().contains("no parameter named `emission.year_one_tw`"), "{typo:?}");
}
