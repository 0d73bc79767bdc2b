//! JSON views of events, for people and tools (`auroraq tap`, the JSONL sink, the API).

use serde_json::Value;

/// Rewrites every `{"unscaled": n, "scale": s}` object into the exact decimal string it stands for.
pub fn decimals_to_strings(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.len() == 2 {
                if let (Some(Value::Number(u)), Some(Value::Number(s))) = (m.get("unscaled"), m.get("scale"))
                {
                    if let (Some(u), Some(s)) = (u.as_i64(), s.as_i64()) {
                        if let Ok(d) = crate::Dec::from_parts(u, s as i32) {
                            *v = Value::String(d.to_string());
                            return;
                        }
                    }
                }
            }
            for x in m.values_mut() {
                decimals_to_strings(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(decimals_to_strings),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::samples;

    #[test]
    fn json_view_has_kind_and_exact_decimals() {
        let ev = crate::AnyEvent::TradeTick(samples::trade(3));
        let j = ev.to_json();
        assert_eq!(j["kind"], "TradeTick");
        assert_eq!(j["price"], "64123.45000000");
        assert_eq!(j["quantity"], "0.00150000");
        assert_eq!(j["symbol"], "BTCUSDT");
        assert_eq!(j["event_id"].as_str().map(str::len), Some(32));
    }

    #[test]
    fn futures_kinds_have_exact_decimals_nulls_and_side_names() {
        let j = crate::AnyEvent::MarkPrice(samples::mark_price()).to_json();
        assert_eq!(j["kind"], "MarkPrice");
        assert_eq!(j["mark_price"], "11794.15000000");
        assert_eq!(j["index_price"], "11784.62659091");
        assert_eq!(j["funding_rate"], "0.00038167");
        assert_eq!(j["next_funding_time"], 1_562_306_400_000_000i64);
        let mut delivery = samples::mark_price();
        delivery.funding_rate = None;
        let j = crate::AnyEvent::MarkPrice(delivery).to_json();
        assert!(j["funding_rate"].is_null(), "{j}");
        let j = crate::AnyEvent::Liquidation(samples::liquidation()).to_json();
        assert_eq!(j["kind"], "Liquidation");
        assert_eq!(j["side"], "sell");
        assert_eq!(j["order_type"], "LIMIT");
        assert_eq!(j["quantity"], "0.014");
        assert_eq!(j["average_price"], "9910");
        assert_eq!(j["trade_time"], 1_568_014_460_893_000i64);
    }
}
