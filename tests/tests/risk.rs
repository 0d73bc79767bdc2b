//! The risk stage: VaR and ES against hand-computed values, parametric against historical,
//! sizing caps, limits (resize, reject, daily loss, drawdown halt and reset), idempotency and
//! determinism. Everything runs the `RiskProcessor` on a `SimClock`, as a backtest would.

use std::collections::BTreeMap;
use std::str::FromStr;

use auroraq_risk::{
    historical_es, historical_var, parametric_es, parametric_var, portfolio_var, vol_target_quantity, Limits,
    RiskConfig, RiskProcessor, SizingConfig, VarEstimate, RESET_KIND,
};
use auroraq_schemas::{
    Alert, AnyEvent, Dec, EventKind, Kline, Meta, Micros, OrderIntent, OrderSide, OrderStatus, OrderUpdate,
    RiskDecision, Severity, TradeTick, Verdict,
};
use auroraq_stage::{Processor, SimClock};
use rust_decimal::Decimal;

/// Midnight UTC, 2023-11-14 (a multiple of an hour and of a day).
const T0: Micros = 1_699_920_000_000_000;
const H: Micros = 3_600_000_000;
const DAY: Micros = 86_400_000_000;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

fn bar(symbol: &str, i: i64, close: Decimal) -> AnyEvent {
    let open_time = T0 + i * H;
    let close_time = open_time + H - 1;
    AnyEvent::Kline(Kline {
        meta: Meta::raw(
            EventKind::Kline,
            "test",
            &format!("{symbol}:{i}"),
            close_time,
            close_time,
        ),
        exchange: "test".into(),
        symbol: symbol.into(),
        interval: "1h".into(),
        open_time,
        close_time,
        open: Dec(close),
        high: Dec(close),
        low: Dec(close),
        close: Dec(close),
        volume: Dec(d("1000")),
        quote_volume: None,
        trades: None,
        closed: true,
    })
}

fn tick(symbol: &str, ts: Micros, price: &str) -> AnyEvent {
    AnyEvent::TradeTick(TradeTick {
        meta: Meta::raw(EventKind::TradeTick, "test", &format!("{symbol}:{ts}"), ts, ts),
        exchange: "test".into(),
        symbol: symbol.into(),
        trade_id: ts.to_string(),
        price: Dec(d(price)),
        quantity: Dec(d("1")),
        aggressor: auroraq_schemas::Side::Buy,
        aggregated: false,
    })
}

fn intent(
    id: &str,
    agent: &str,
    symbol: &str,
    side: OrderSide,
    qty: Option<&str>,
    ts: Micros,
) -> OrderIntent {
    OrderIntent {
        meta: Meta::raw(EventKind::OrderIntent, agent, id, ts, ts),
        intent_id: id.into(),
        agent: agent.into(),
        symbol: symbol.into(),
        side,
        quantity: qty.map(|q| Dec(d(q))),
        notional: None,
        limit_price: None,
        reason: "test".into(),
    }
}

fn fill(agent: &str, symbol: &str, side: OrderSide, qty: &str, price: &str, ts: Micros) -> AnyEvent {
    AnyEvent::OrderUpdate(OrderUpdate {
        meta: Meta::raw(
            EventKind::OrderUpdate,
            "execution",
            &format!("fill:{agent}:{symbol}:{ts}"),
            ts,
            ts,
        ),
        client_order_id: format!("c{ts}"),
        venue_order_id: None,
        venue: "paper".into(),
        agent: agent.into(),
        symbol: symbol.into(),
        side,
        status: OrderStatus::Filled,
        quantity: Dec(d(qty)),
        filled_quantity: Dec(d(qty)),
        last_fill_price: Some(Dec(d(price))),
        last_fill_quantity: Some(Dec(d(qty))),
        fee: Some(Dec::ZERO),
        fee_asset: Some("USD".into()),
        reason: None,
    })
}

/// Runs one event at its own event time.
fn feed(p: &mut RiskProcessor, clock: &SimClock, ev: &AnyEvent) -> Vec<AnyEvent> {
    clock.advance_to(ev.meta().ts_event);
    p.process(ev, clock).expect("risk never fails on good events")
}

fn decide(p: &mut RiskProcessor, clock: &SimClock, i: OrderIntent) -> (RiskDecision, Vec<Alert>) {
    let out = feed(p, clock, &AnyEvent::OrderIntent(i));
    let mut decision = None;
    let mut alerts = Vec::new();
    for e in out {
        match e {
            AnyEvent::RiskDecision(r) => decision = Some(r),
            AnyEvent::Alert(a) => alerts.push(a),
            other => panic!("unexpected {:?}", other.kind()),
        }
    }
    (decision.expect("one decision per intent"), alerts)
}

fn alerts(out: &[AnyEvent]) -> Vec<Alert> {
    out.iter()
        .filter_map(|e| match e {
            AnyEvent::Alert(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

/// Limits off, VaR limit off, estimates after 2 returns.
fn base_config() -> RiskConfig {
    RiskConfig {
        limits: Limits::none(),
        max_portfolio_var: None,
        min_observations: 2,
        lookback: 1000,
        ..RiskConfig::default()
    }
}

/// Closes (exact decimals) that produce the given returns from 100.
fn closes(returns: &[&str]) -> Vec<Decimal> {
    let mut c = vec![d("100")];
    for r in returns {
        let last = *c.last().unwrap_or(&Decimal::ONE);
        c.push(last * (Decimal::ONE + d(r)));
    }
    c
}

#[test]
fn historical_var_and_es_by_hand() {
    // 20 daily returns. Sorted, the worst are -0.052, -0.041, -0.034, -0.027, -0.019, ...
    let r = [
        0.012, -0.034, 0.005, -0.011, 0.021, -0.052, 0.003, 0.017, -0.008, 0.009, -0.027, 0.014, -0.003,
        0.006, -0.019, 0.025, -0.041, 0.002, 0.011, -0.006,
    ];
    // c = 0.95: k = ceil(20 * 0.05) = 1  -> VaR = 0.052, ES = 0.052
    assert!(close(historical_var(&r, 0.95).unwrap_or(0.0), 0.052, 1e-15));
    assert!(close(historical_es(&r, 0.95).unwrap_or(0.0), 0.052, 1e-15));
    // c = 0.90: k = ceil(20 * 0.10) = 2  -> VaR = 0.041, ES = (0.052 + 0.041) / 2 = 0.0465
    assert!(close(historical_var(&r, 0.90).unwrap_or(0.0), 0.041, 1e-15));
    assert!(close(historical_es(&r, 0.90).unwrap_or(0.0), 0.0465, 1e-15));
    // c = 0.80: k = 4 -> VaR = 0.027, ES = (0.052 + 0.041 + 0.034 + 0.027) / 4 = 0.0385
    assert!(close(historical_var(&r, 0.80).unwrap_or(0.0), 0.027, 1e-15));
    assert!(close(historical_es(&r, 0.80).unwrap_or(0.0), 0.0385, 1e-15));
    // Horizon 4 periods: sqrt(4) = 2 -> VaR 0.082, ES 0.093.
    let e = VarEstimate::from_series(&r, 0.90, 4.0).expect("estimate");
    assert!(close(e.historical_var, 0.082, 1e-15), "{e:?}");
    assert!(close(e.historical_es, 0.093, 1e-15), "{e:?}");
    assert!(historical_var(&[], 0.99).is_none());
}

#[test]
fn parametric_var_and_es_by_hand() {
    // r = [0.01, -0.02, 0.03, -0.01, 0.02, -0.03, 0.015, -0.005]
    // mean = 0.01 / 8 = 0.00125
    // deviations^2 sum = 7.65625e-5 + 4.515625e-4 + 8.265625e-4 + 1.265625e-4 + 3.515625e-4
    //                  + 9.765625e-4 + 1.890625e-4 + 3.90625e-5 = 3.0375e-3
    // sd = sqrt(3.0375e-3 / 7) = 0.0208309522448824
    // c = 0.99: z = 2.3263478740408408, phi(z) = 0.0266521422
    //   VaR = z * sd - mean = 0.0484600415 - 0.00125 = 0.0472100415
    //   ES  = sd * phi(z) / 0.01 - mean = 0.0555189501 - 0.00125 = 0.0542689501
    // horizon 10: VaR = z * sd * sqrt(10) - 10 * mean = 0.1532441065 - 0.0125 = 0.1407441065
    //             ES  = 0.0555189501 * sqrt(10) - 0.0125 = 0.1630663358
    // c = 0.95: z = 1.6448536270 -> VaR = 0.0330138674, ES = sd * 0.1031356 / 0.05 - mean = 0.0417182720
    let r = [0.01, -0.02, 0.03, -0.01, 0.02, -0.03, 0.015, -0.005];
    let e = VarEstimate::from_series(&r, 0.99, 1.0).expect("estimate");
    assert!(close(e.mean, 0.00125, 1e-15));
    assert!(close(e.std_dev, 0.020830952244882406, 1e-15));
    assert!(close(e.parametric_var, 0.04721004146912846, 1e-10), "{e:?}");
    assert!(close(e.parametric_es, 0.054268950146405016, 1e-10), "{e:?}");
    assert!(close(
        parametric_var(e.mean, e.std_dev, 0.99, 10.0),
        0.1407441065486582,
        1e-10
    ));
    assert!(close(
        parametric_es(e.mean, e.std_dev, 0.99, 10.0),
        0.16306633576397855,
        1e-10
    ));
    assert!(close(
        parametric_var(e.mean, e.std_dev, 0.95, 1.0),
        0.03301386735284772,
        1e-10
    ));
    assert!(close(
        parametric_es(e.mean, e.std_dev, 0.95, 1.0),
        0.041718271988094593,
        1e-10
    ));
    // Historical on the same 8 returns at 99%: k = 1 -> the worst, 0.03.
    assert!(close(e.historical_var, 0.03, 1e-15) && close(e.historical_es, 0.03, 1e-15));
}

#[test]
fn var_from_the_bar_stream_matches_the_hand_values() {
    // The same 8 returns as above, as 9 hourly closes; horizon 10 hours.
    let cfg = RiskConfig {
        confidence: 0.99,
        horizon_secs: 10 * 3600,
        ..base_config()
    };
    let mut p = RiskProcessor::new(cfg).expect("config");
    let clock = SimClock::new(T0);
    let c = closes(&[
        "0.01", "-0.02", "0.03", "-0.01", "0.02", "-0.03", "0.015", "-0.005",
    ]);
    for (i, px) in c.iter().enumerate() {
        assert!(feed(&mut p, &clock, &bar("BTCUSD", i as i64, *px)).is_empty());
    }
    assert_eq!(p.returns("BTCUSD").map(|s| s.len()), Some(8));
    let e = p.asset_var("BTCUSD").expect("8 returns are enough");
    assert!(close(e.horizon, 10.0, 1e-12));
    assert!(close(e.parametric_var, 0.1407441065486582, 1e-9), "{e:?}");
    assert!(close(e.parametric_es, 0.16306633576397855, 1e-9), "{e:?}");
    // Historical, scaled by sqrt(10): 0.03 * 3.16227766 = 0.0948683298
    assert!(close(e.historical_var, 0.03 * 10f64.sqrt(), 1e-9), "{e:?}");
    // A bar of the same hour again (late/duplicate) changes nothing.
    feed(&mut p, &clock, &bar("BTCUSD", 3, d("1")));
    assert_eq!(p.returns("BTCUSD").map(|s| s.len()), Some(8));
}

#[test]
fn portfolio_var_by_hand() {
    // A = [0.01, -0.02, 0.03, -0.01] (mean 0.0025), B = [0.02, 0.01, -0.01, -0.02] (mean 0)
    // var(A) = 1.475e-3 / 3 = 4.916667e-4, var(B) = 1e-3 / 3 = 3.333333e-4,
    // cov(A, B) = (1.5e-4 - 2.25e-4 - 2.75e-4 + 2.5e-4) / 3 = -3.333333e-5
    // Exposures w = [1000, -500]:
    //   P&L per period = [0, -25, 35, 0]
    //   sigma_p^2 = 1e6 * 4.916667e-4 + 2.5e5 * 3.333333e-4 + 2 * 1000 * -500 * -3.333333e-5
    //             = 491.6667 + 83.3333 + 33.3333 = 608.3333 -> sigma_p = 24.6644143
    //   mu_p = 1000 * 0.0025 = 2.5
    //   c = 0.95: parametric VaR = 1.6448536 * 24.6644143 - 2.5 = 38.0693513
    //             historical: k = ceil(4 * 0.05) = 1 -> VaR = ES = 25
    let a = vec![0.01, -0.02, 0.03, -0.01];
    let b = vec![0.02, 0.01, -0.01, -0.02];
    let pv = portfolio_var(&[1000.0, -500.0], &[a, b], 0.95, 1.0).expect("portfolio");
    assert!(close(pv.estimate.std_dev, 24.66441431158124, 1e-9), "{pv:?}");
    assert!(close(pv.estimate.mean, 2.5, 1e-12));
    assert!(
        close(pv.estimate.parametric_var, 38.069351337038185, 1e-8),
        "{pv:?}"
    );
    assert!(close(pv.estimate.historical_var, 25.0, 1e-9));
    assert!(close(pv.estimate.historical_es, 25.0, 1e-9));
    assert!(close(pv.gross_exposure, 1500.0, 1e-12));

    // The same through the stage: two assets' bars, then exposures by symbol.
    let cfg = RiskConfig {
        confidence: 0.95,
        horizon_secs: 3600,
        ..base_config()
    };
    let mut p = RiskProcessor::new(cfg).expect("config");
    let clock = SimClock::new(T0);
    let ca = closes(&["0.01", "-0.02", "0.03", "-0.01"]);
    let cb = closes(&["0.02", "0.01", "-0.01", "-0.02"]);
    for i in 0..5 {
        feed(&mut p, &clock, &bar("A", i as i64, ca[i]));
        feed(&mut p, &clock, &bar("B", i as i64, cb[i]));
    }
    let ex = BTreeMap::from([("A".to_owned(), 1000.0), ("B".to_owned(), -500.0)]);
    let pv = p.portfolio_var_of(&ex).expect("aligned returns");
    assert!(
        close(pv.estimate.parametric_var, 38.069351337038185, 1e-8),
        "{pv:?}"
    );
    assert!(close(pv.estimate.historical_var, 25.0, 1e-8), "{pv:?}");
}

/// Deterministic standard normals (xorshift64* + Box-Muller).
fn normals(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed;
    let mut u = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        ((s.wrapping_mul(0x2545F4914F6CDD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (a, b) = (u(), u());
            (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
        })
        .collect()
}

#[test]
fn parametric_and_historical_agree_on_a_normal_series_not_on_fat_tails() {
    // 20000 returns ~ N(0.0005, 0.01): both methods estimate the same quantile.
    let r: Vec<f64> = normals(20_000, 7).iter().map(|z| 0.0005 + 0.01 * z).collect();
    let e = VarEstimate::from_series(&r, 0.99, 1.0).expect("estimate");
    // True values: VaR = 2.3263 * 0.01 - 0.0005 = 0.022763, ES = 0.026652 - 0.0005 = 0.026152.
    assert!((e.historical_var / e.parametric_var - 1.0).abs() < 0.05, "{e:?}");
    assert!((e.historical_es / e.parametric_es - 1.0).abs() < 0.05, "{e:?}");
    assert!((e.parametric_var / 0.022763 - 1.0).abs() < 0.03, "{e:?}");
    // A fat-tailed series (5% of days with 5x the volatility): the normal model understates the
    // tail, so historical ES is well above parametric ES.
    let z = normals(20_000, 11);
    let fat: Vec<f64> = z
        .iter()
        .enumerate()
        .map(|(i, z)| if i % 20 == 0 { 0.05 * z } else { 0.01 * z })
        .collect();
    let f = VarEstimate::from_series(&fat, 0.99, 1.0).expect("estimate");
    assert!(f.historical_es > 1.3 * f.parametric_es, "{f:?}");
}

#[test]
fn sizing_by_volatility_target_with_caps() {
    let cfg = SizingConfig {
        target_annual_vol: 0.2,
        max_position_fraction: 0.1,
        lot_size: d("0.001"),
        ..SizingConfig::default()
    };
    let lot = d("0.001");
    // equity 100000, vol 0.8: notional = 100000 * 0.2 / 0.8 = 25000 > cap 10000 -> 10000 / 50000 = 0.2
    let s = vol_target_quantity(d("100000"), d("50000"), 0.8, &cfg, lot).expect("sized");
    assert_eq!(s.quantity, d("0.2"));
    assert_eq!(s.capped_by, Some("max_position_fraction"));
    // vol 4.0: notional 5000 (under the cap) -> 5000 / 50000 = 0.1
    let s = vol_target_quantity(d("100000"), d("50000"), 4.0, &cfg, lot).expect("sized");
    assert_eq!((s.quantity, s.capped_by), (d("0.1"), None));
    // Lot rounding: 5000 / 30000 = 0.16666.. -> 0.166 (down, never up)
    let s = vol_target_quantity(d("100000"), d("30000"), 4.0, &cfg, lot).expect("sized");
    assert_eq!(s.quantity, d("0.166"));
    // max_quantity caps.
    let capped = SizingConfig {
        max_quantity: Some(d("0.05")),
        ..cfg.clone()
    };
    let s = vol_target_quantity(d("100000"), d("50000"), 4.0, &capped, lot).expect("sized");
    assert_eq!((s.quantity, s.capped_by), (d("0.05"), Some("max_quantity")));
    // Below min_quantity: refused with the reason.
    let min = SizingConfig {
        min_quantity: d("1"),
        ..cfg.clone()
    };
    let e = vol_target_quantity(d("100000"), d("50000"), 4.0, &min, lot).expect_err("too small");
    assert!(e.contains("below the minimum"), "{e}");
    assert!(vol_target_quantity(d("100000"), d("50000"), 0.0, &cfg, lot).is_err());
}

#[test]
fn unsized_intents_are_sized_from_the_stream_volatility() {
    // 40 hourly bars alternating +1% / -1%.
    let rets: Vec<&str> = (0..40)
        .map(|i| if i % 2 == 0 { "0.01" } else { "-0.01" })
        .collect();
    let c = closes(&rets);
    let returns: Vec<f64> = c
        .windows(2)
        .map(|w| {
            let (a, b) = (
                w[0].to_string().parse::<f64>().unwrap_or(0.0),
                w[1].to_string().parse::<f64>().unwrap_or(0.0),
            );
            b / a - 1.0
        })
        .collect();
    let n = returns.len() as f64;
    let m = returns.iter().sum::<f64>() / n;
    let sd = (returns.iter().map(|r| (r - m) * (r - m)).sum::<f64>() / (n - 1.0)).sqrt();
    let annual = sd * (8766f64).sqrt(); // 365.25 days of hours
    for (fraction, capped) in [(1.0, false), (0.05, true)] {
        let cfg = RiskConfig {
            sizing: SizingConfig {
                max_position_fraction: fraction,
                lot_size: d("0.0001"),
                ..SizingConfig::default()
            },
            ..base_config()
        };
        let mut p = RiskProcessor::new(cfg).expect("config");
        let clock = SimClock::new(T0);
        for (i, px) in c.iter().enumerate() {
            feed(&mut p, &clock, &bar("ETHUSD", i as i64, *px));
        }
        assert!(close(p.annual_vol("ETHUSD").unwrap_or(0.0), annual, 1e-9));
        let price: f64 = c[c.len() - 1].to_string().parse().unwrap_or(0.0);
        let notional = (100_000.0 * 0.2 / annual).min(100_000.0 * fraction);
        let expected = ((notional / price) / 0.0001).floor() * 0.0001;
        let (dec, _) = decide(
            &mut p,
            &clock,
            intent("s1", "a1", "ETHUSD", OrderSide::Buy, None, T0 + 41 * H),
        );
        assert_eq!(dec.verdict, Verdict::Approved, "{dec:?}");
        let q: f64 = dec
            .approved_quantity
            .map(|q| q.to_string())
            .unwrap_or_default()
            .parse()
            .unwrap_or(0.0);
        assert!(close(q, expected, 1e-9), "capped {capped}: {q} vs {expected}");
        assert_eq!(
            dec.checks["sizing"].contains("capped by max_position_fraction"),
            capped,
            "{:?}",
            dec.checks
        );
        // The target is a position: with the first order pending, nothing is missing.
        let (again, _) = decide(
            &mut p,
            &clock,
            intent("s1b", "a1", "ETHUSD", OrderSide::Buy, None, T0 + 41 * H + 1),
        );
        assert_eq!(again.verdict, Verdict::Rejected);
        assert!(
            again.reason.contains("already at the volatility target"),
            "{}",
            again.reason
        );
        // An unsized sell while long closes the long and opens the target short: twice the size.
        let (sell, _) = decide(
            &mut p,
            &clock,
            intent("s1c", "a1", "ETHUSD", OrderSide::Sell, None, T0 + 41 * H + 2),
        );
        let sq: f64 = sell
            .approved_quantity
            .map(|q| q.to_string())
            .unwrap_or_default()
            .parse()
            .unwrap_or(0.0);
        assert!(close(sq, 2.0 * expected, 1e-9), "{sell:?}");
    }
    // Without enough returns: rejected, saying why.
    let mut p = RiskProcessor::new(base_config()).expect("config");
    let clock = SimClock::new(T0);
    feed(&mut p, &clock, &tick("XRPUSD", T0 + 1, "0.5"));
    let (dec, _) = decide(
        &mut p,
        &clock,
        intent("s2", "a1", "XRPUSD", OrderSide::Buy, None, T0 + 2),
    );
    assert_eq!(dec.verdict, Verdict::Rejected);
    assert!(dec.reason.contains("no volatility estimate"), "{}", dec.reason);
    assert_eq!(dec.approved_quantity, None);
}

#[test]
fn position_limit_resizes_then_rejects() {
    let cfg = RiskConfig {
        limits: Limits {
            max_position_qty: Some(d("2")),
            ..Limits::none()
        },
        ..base_config()
    };
    let mut p = RiskProcessor::new(cfg).expect("config");
    let clock = SimClock::new(T0);
    feed(&mut p, &clock, &tick("BTCUSD", T0 + 1, "100"));
    feed(
        &mut p,
        &clock,
        &fill("a1", "BTCUSD", OrderSide::Buy, "1.5", "100", T0 + 2),
    );
    // 1.5 held + 1 = 2.5 > 2: resized to 0.5.
    let (dec, al) = decide(
        &mut p,
        &clock,
        intent("i1", "a1", "BTCUSD", OrderSide::Buy, Some("1"), T0 + 3),
    );
    assert_eq!(dec.verdict, Verdict::Resized, "{dec:?}");
    assert_eq!(dec.approved_quantity, Some(Dec(d("0.5"))));
    assert!(
        dec.checks["max_position_qty"].starts_with("resized 1 -> 0.5"),
        "{:?}",
        dec.checks
    );
    assert!(dec.reason.contains("max_position_qty 2"), "{}", dec.reason);
    assert_eq!(al.len(), 1);
    assert_eq!(
        (al[0].kind.as_str(), al[0].severity),
        ("limit_breach", Severity::Warning)
    );
    assert_eq!(al[0].attributes["check"], "max_position_qty");
    // The 0.5 approved is pending: the position is at the limit, so the next buy is rejected.
    let (dec, _) = decide(
        &mut p,
        &clock,
        intent("i2", "a1", "BTCUSD", OrderSide::Buy, Some("1"), T0 + 4),
    );
    assert_eq!(dec.verdict, Verdict::Rejected, "{dec:?}");
    assert!(dec.reason.contains("at the limit"), "{}", dec.reason);
    // Selling through zero is fine up to -2: 2 + 2 = 4 >= 3.
    let (dec, _) = decide(
        &mut p,
        &clock,
        intent("i3", "a1", "BTCUSD", OrderSide::Sell, Some("3"), T0 + 5),
    );
    assert_eq!(
        (dec.verdict, dec.approved_quantity),
        (Verdict::Approved, Some(Dec(d("3"))))
    );

    // A notional limit at the current price: 300 / 100 = 3.
    let cfg = RiskConfig {
        limits: Limits {
            max_position_notional: Some(d("300")),
            ..Limits::none()
        },
        ..base_config()
    };
    let mut p = RiskProcessor::new(cfg).expect("config");
    feed(&mut p, &clock, &tick("BTCUSD", T0 + 10, "100"));
    let (dec, _) = decide(
        &mut p,
        &clock,
        intent("n1", "a2", "BTCUSD", OrderSide::Buy, Some("5"), T0 + 11),
    );
    assert_eq!(
        (dec.verdict, dec.approved_quantity),
        (Verdict::Resized, Some(Dec(d("3"))))
    );
    assert!(dec.checks["max_position_notional"].starts_with("resized"));
}

#[test]
fn order_notional_over_the_limit_is_rejected() {
    let cfg = RiskConfig {
        limits: Limits {
            max_order_notional: Some(d("1000")),
            ..Limits::none()
        },
        ..base_config()
    };
    let mut p = RiskProcessor::new(cfg).expect("config");
    let clock = SimClock::new(T0);
    // No price yet: rejected.
    let (dec, _) = decide(
        &mut p,
        &clock,
        intent("i0", "a1", "BTCUSD", OrderSide::Buy, Some("1"), T0 + 1),
    );
    assert_eq!(dec.verdict, Verdict::Rejected);
    assert!(dec.reason.contains("no market price"), "{}", dec.reason);
    feed(&mut p, &clock, &tick("BTCUSD", T0 + 2, "100"));
    // 11 * 100 = 1100 > 1000.
    let (dec, al) = decide(
        &mut p,
        &clock,
        intent("i1", "a1", "BTCUSD", OrderSide::Buy, Some("11"), T0 + 3),
    );
    assert_eq!((dec.verdict, dec.approved_quantity), (Verdict::Rejected, None));
    assert!(
        dec.reason
            .starts_with("max_order_notional: order notional 1100 exceeds"),
        "{}",
        dec.reason
    );
    assert!(dec.checks["max_order_notional"].starts_with("fail"));
    assert_eq!(al.iter().filter(|a| a.kind == "limit_breach").count(), 1);
    // 10 * 100 = 1000: at the limit, approved.
    let (dec, al) = decide(
        &mut p,
        &clock,
        intent("i2", "a1", "BTCUSD", OrderSide::Buy, Some("10"), T0 + 4),
    );
    assert_eq!(
        (dec.verdict, dec.approved_quantity),
        (Verdict::Approved, Some(Dec(d("10"))))
    );
    assert!(al.is_empty());
    // A notional intent: 250 at 100 -> 2.5.
    let mut ni = intent("i3", "a1", "BTCUSD", OrderSide::Sell, None, T0 + 5);
    ni.notional = Some(Dec(d("250")));
    let (dec, _) = decide(&mut p, &clock, ni);
    assert_eq!(
        (dec.verdict, dec.approved_quantity),
        (Verdict::Approved, Some(Dec(d("2.5"))))
    );
}

#[test]
fn daily_loss_blocks_new_risk_until_the_next_day() {
    let cfg = RiskConfig {
        initial_equity: d("1000"),
        limits: Limits {
            max_daily_loss: Some(d("50")),
            ..Limits::none()
        },
        ..base_config()
    };
    let mut p = RiskProcessor::new(cfg).expect("config");
    let clock = SimClock::new(T0);
    feed(&mut p, &clock, &tick("BTCUSD", T0 + H, "100"));
    feed(
        &mut p,
        &clock,
        &fill("a1", "BTCUSD", OrderSide::Buy, "10", "100", T0 + H + 1),
    );
    // -40: under the limit.
    assert!(feed(&mut p, &clock, &tick("BTCUSD", T0 + 2 * H, "96")).is_empty());
    // -60 >= 50: blocked, alerted once.
    let out = feed(&mut p, &clock, &tick("BTCUSD", T0 + 3 * H, "94"));
    let al = alerts(&out);
    assert_eq!(al.len(), 1, "{out:?}");
    assert_eq!(
        (al[0].kind.as_str(), al[0].severity),
        ("limit_breach", Severity::Critical)
    );
    assert_eq!(al[0].attributes["limit"], "max_daily_loss");
    assert_eq!(al[0].attributes["daily_loss"], "60");
    assert!(
        alerts(&feed(&mut p, &clock, &tick("BTCUSD", T0 + 4 * H, "93"))).is_empty(),
        "alerted once"
    );
    let (dec, _) = decide(
        &mut p,
        &clock,
        intent("b1", "a1", "BTCUSD", OrderSide::Buy, Some("1"), T0 + 5 * H),
    );
    assert_eq!(dec.verdict, Verdict::Rejected);
    assert!(dec.reason.starts_with("daily_loss"), "{}", dec.reason);
    // Reducing is still allowed, never beyond flat: sell 20 -> 10.
    let (dec, _) = decide(
        &mut p,
        &clock,
        intent("s1", "a1", "BTCUSD", OrderSide::Sell, Some("20"), T0 + 5 * H + 1),
    );
    assert_eq!(
        (dec.verdict, dec.approved_quantity),
        (Verdict::Resized, Some(Dec(d("10"))))
    );
    // The next UTC day: the block is lifted (the day starts from the last equity).
    feed(&mut p, &clock, &tick("BTCUSD", T0 + DAY + H, "93"));
    let (dec, _) = decide(
        &mut p,
        &clock,
        intent("b2", "a1", "BTCUSD", OrderSide::Buy, Some("1"), T0 + DAY + 2 * H),
    );
    assert_eq!(dec.verdict, Verdict::Approved, "{dec:?}");
    let st = p.agent("a1").expect("known agent");
    assert!(!st.daily_blocked);
}

#[test]
fn drawdown_halts_the_agent_until_an_explicit_reset() {
    let cfg = RiskConfig {
        initial_equity: d("1000"),
        limits: Limits {
            max_drawdown: Some(0.10),
            ..Limits::none()
        },
        ..base_config()
    };
    let mut p = RiskProcessor::new(cfg).expect("config");
    let clock = SimClock::new(T0);
    feed(&mut p, &clock, &tick("BTCUSD", T0 + 1, "100"));
    feed(
        &mut p,
        &clock,
        &fill("a1", "BTCUSD", OrderSide::Buy, "10", "100", T0 + 2),
    );
    // Peak 1000 -> 950: drawdown 5%.
    assert!(feed(&mut p, &clock, &tick("BTCUSD", T0 + 3, "95")).is_empty());
    // 890: drawdown 11% >= 10%: halted.
    let out = feed(&mut p, &clock, &tick("BTCUSD", T0 + 4, "89"));
    let al = alerts(&out);
    assert_eq!(al.len(), 1, "{out:?}");
    assert_eq!(
        (al[0].kind.as_str(), al[0].severity),
        ("halted", Severity::Critical)
    );
    assert_eq!(al[0].subject.as_deref(), Some("a1"));
    assert_eq!(al[0].attributes["drawdown"], "0.110000");
    assert!(p.agent("a1").and_then(|s| s.halted).is_some());
    let (dec, _) = decide(
        &mut p,
        &clock,
        intent("b1", "a1", "BTCUSD", OrderSide::Buy, Some("1"), T0 + 5),
    );
    assert_eq!(dec.verdict, Verdict::Rejected);
    assert!(
        dec.reason.contains("halted") && dec.reason.contains("reset"),
        "{}",
        dec.reason
    );
    // Reducing stays possible.
    let (dec, _) = decide(
        &mut p,
        &clock,
        intent("s1", "a1", "BTCUSD", OrderSide::Sell, Some("4"), T0 + 6),
    );
    assert_eq!(
        (dec.verdict, dec.approved_quantity),
        (Verdict::Approved, Some(Dec(d("4"))))
    );
    // Prices recover and a day passes: still halted (only a reset lifts it).
    feed(&mut p, &clock, &tick("BTCUSD", T0 + DAY + 1, "120"));
    let (dec, _) = decide(
        &mut p,
        &clock,
        intent("b2", "a1", "BTCUSD", OrderSide::Buy, Some("1"), T0 + DAY + 2),
    );
    assert_eq!(dec.verdict, Verdict::Rejected, "{dec:?}");
    // Another agent is not affected.
    let (dec, _) = decide(
        &mut p,
        &clock,
        intent("o1", "a2", "BTCUSD", OrderSide::Buy, Some("1"), T0 + DAY + 3),
    );
    assert_eq!(dec.verdict, Verdict::Approved);
    // A reset for someone else, or our own kind of alert, lifts nothing.
    let reset = |subject: &str, source: &str, ts: Micros| {
        AnyEvent::Alert(Alert {
            meta: Meta::raw(EventKind::Alert, source, &format!("reset-{subject}-{ts}"), ts, ts),
            severity: Severity::Info,
            kind: RESET_KIND.into(),
            subject: Some(subject.into()),
            message: "operator reset".into(),
            attributes: BTreeMap::new(),
        })
    };
    feed(&mut p, &clock, &reset("a1", "risk", T0 + DAY + 4));
    assert!(
        p.agent("a1").and_then(|s| s.halted).is_some(),
        "risk ignores alerts from itself"
    );
    let out = feed(&mut p, &clock, &reset("a1", "operator", T0 + DAY + 5));
    let al = alerts(&out);
    assert_eq!(al.len(), 1);
    assert_eq!(
        (al[0].kind.as_str(), al[0].attributes["lifted"].as_str()),
        ("halt_reset", "true")
    );
    let (dec, _) = decide(
        &mut p,
        &clock,
        intent("b3", "a1", "BTCUSD", OrderSide::Buy, Some("1"), T0 + DAY + 6),
    );
    assert_eq!(dec.verdict, Verdict::Approved, "{dec:?}");
    // Drawdown now counts from the equity at the reset (peak = now).
    let st = p.agent("a1").expect("agent");
    assert_eq!(st.drawdown, Decimal::ZERO);
    assert_eq!(st.peak_equity, st.equity);
    // The API reset does the same: halted again by a second drop (1200 -> 900), then lifted.
    feed(&mut p, &clock, &tick("BTCUSD", T0 + DAY + 7, "90"));
    assert!(
        p.agent("a1").and_then(|s| s.halted).is_some(),
        "a second drop halts again"
    );
    assert!(p.reset_agent("a1"));
    let st = p.agent("a1").expect("agent");
    assert!(st.halted.is_none());
    assert_eq!((st.equity, st.peak_equity), (d("900"), d("900")));
    assert!(!p.reset_agent("a1"), "nothing left to lift");
}

#[test]
fn var_limit_alerts_and_rejects_new_risk() {
    let cfg = RiskConfig {
        initial_equity: d("1000"),
        max_portfolio_var: Some(0.01),
        confidence: 0.95,
        horizon_secs: 3600,
        min_observations: 4,
        ..base_config()
    };
    let mut p = RiskProcessor::new(cfg).expect("config");
    let clock = SimClock::new(T0);
    let c = closes(&["0.03", "-0.03", "0.03", "-0.03"]);
    for (i, px) in c.iter().take(4).enumerate() {
        feed(&mut p, &clock, &bar("BTCUSD", i as i64, *px));
    }
    // A position worth ~1000 whose 1-hour 95% VaR is ~3% of it: ~30 > 10 (1% of 1000).
    feed(
        &mut p,
        &clock,
        &fill("a1", "BTCUSD", OrderSide::Buy, "10", "100", T0 + 4 * H - 10),
    );
    let out = feed(&mut p, &clock, &bar("BTCUSD", 4, c[4]));
    let al = alerts(&out);
    assert_eq!(al.len(), 1, "{out:?}");
    assert_eq!(al[0].kind, "var_breach");
    let v: f64 = al[0].attributes["var"].parse().unwrap_or(0.0);
    assert!(v > 10.0, "{v}");
    let (dec, al) = decide(
        &mut p,
        &clock,
        intent("b1", "a1", "BTCUSD", OrderSide::Buy, Some("1"), T0 + 5 * H),
    );
    assert_eq!(dec.verdict, Verdict::Rejected);
    assert!(
        dec.reason.starts_with("var: portfolio VaR after the order"),
        "{}",
        dec.reason
    );
    assert_eq!(al.first().map(|a| a.kind.as_str()), Some("var_breach"));
    // Reducing is not refused by the VaR check.
    let (dec, _) = decide(
        &mut p,
        &clock,
        intent("s1", "a1", "BTCUSD", OrderSide::Sell, Some("5"), T0 + 5 * H + 1),
    );
    assert_eq!(dec.verdict, Verdict::Approved, "{dec:?}");
    assert!(dec.checks["asset_var"].starts_with("info"), "{:?}", dec.checks);
}

#[test]
fn a_redelivered_intent_gets_the_same_decision_and_counts_once() {
    let cfg = RiskConfig {
        limits: Limits {
            max_position_qty: Some(d("3")),
            ..Limits::none()
        },
        ..base_config()
    };
    let mut p = RiskProcessor::new(cfg).expect("config");
    let clock = SimClock::new(T0);
    feed(&mut p, &clock, &tick("BTCUSD", T0 + 1, "100"));
    let i = intent("dup", "a1", "BTCUSD", OrderSide::Buy, Some("2"), T0 + 2);
    let (first, _) = decide(&mut p, &clock, i.clone());
    clock.advance_to(T0 + 100);
    let (again, _) = decide(&mut p, &clock, i);
    assert_eq!(first, again, "same event, same id: the bus de-duplicates it");
    assert_eq!(
        p.agent("a1").map(|s| s.pending["BTCUSD"]),
        Some(d("2")),
        "pending counted once"
    );
    // A fill releases pending; a cancel releases the rest.
    feed(
        &mut p,
        &clock,
        &fill("a1", "BTCUSD", OrderSide::Buy, "2", "100", T0 + 200),
    );
    let st = p.agent("a1").expect("agent");
    assert!(st.pending.is_empty(), "{:?}", st.pending);
    assert_eq!(st.positions["BTCUSD"].quantity, d("2"));
}

#[test]
fn the_same_input_gives_the_same_output() {
    let run = || {
        let cfg = RiskConfig {
            initial_equity: d("1000"),
            limits: Limits {
                max_position_qty: Some(d("5")),
                max_drawdown: Some(0.05),
                ..Limits::none()
            },
            ..base_config()
        };
        let mut p = RiskProcessor::new(cfg).expect("config");
        let clock = SimClock::new(T0);
        let mut out = Vec::new();
        let c = closes(&["0.01", "-0.02", "0.015", "-0.03", "0.02"]);
        for (i, px) in c.iter().enumerate() {
            out.extend(feed(&mut p, &clock, &bar("BTCUSD", i as i64, *px)));
            let side = if i % 2 == 0 {
                OrderSide::Buy
            } else {
                OrderSide::Sell
            };
            let it = intent(
                &format!("i{i}"),
                "a1",
                "BTCUSD",
                side,
                Some("4"),
                T0 + (i as i64 + 1) * H,
            );
            out.extend(feed(&mut p, &clock, &AnyEvent::OrderIntent(it)));
            out.extend(feed(
                &mut p,
                &clock,
                &fill(
                    "a1",
                    "BTCUSD",
                    side,
                    "1",
                    &px.to_string(),
                    T0 + (i as i64 + 1) * H + 1,
                ),
            ));
        }
        out.iter().map(|e| e.to_json().to_string()).collect::<Vec<_>>()
    };
    let (a, b) = (run(), run());
    assert!(a.len() > 5);
    assert_eq!(a, b);
    // Every output encodes (decimals fit the wire).
    let cfg = base_config();
    let mut p = RiskProcessor::new(cfg).expect("config");
    let clock = SimClock::new(T0);
    feed(&mut p, &clock, &tick("BTCUSD", T0 + 1, "3"));
    let (dec, _) = decide(&mut p, &clock, {
        let mut i = intent("enc", "a1", "BTCUSD", OrderSide::Buy, None, T0 + 2);
        i.notional = Some(Dec(d("100")));
        i
    });
    assert_eq!(dec.approved_quantity, Some(Dec(d("33.33333333"))));
    AnyEvent::RiskDecision(dec).encode().expect("encodes");
}

#[test]
fn config_is_validated_and_inputs_are_named() {
    let bad = RiskConfig {
        confidence: 1.5,
        ..RiskConfig::default()
    };
    assert!(RiskProcessor::new(bad).is_err());
    let bad = RiskConfig {
        sizing: SizingConfig {
            lot_size: Decimal::ZERO,
            ..SizingConfig::default()
        },
        ..RiskConfig::default()
    };
    assert!(RiskProcessor::new(bad).is_err());
    let p = RiskProcessor::new(RiskConfig::default()).expect("defaults are valid");
    assert_eq!(p.name(), "risk");
    let inputs = p.inputs();
    for t in [
        "agents.intents",
        "exec.orders",
        "alerts",
        "market.trades.>",
        "market.klines.>",
    ] {
        assert!(inputs.iter().any(|i| i == t), "{t} in {inputs:?}");
    }
}
