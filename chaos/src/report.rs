//! The run's output: a table per run, the JSON report.

use crate::scenario::Report;

fn cell(s: impl ToString, width: usize) -> String {
    format!("{:<width$}", s.to_string())
}

/// One row per scenario, then each failed check with its evidence.
pub fn table(reports: &[Report]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{} {} {} {} {} {} verdict\n",
        cell("scenario", 20),
        cell("faults", 7),
        cell("ops", 7),
        cell("failures (write/key+/key-/proxy/quota)", 40),
        cell("recovery", 10),
        cell("failover p99", 13),
    ));
    for r in reports {
        let failures: Vec<String> = r.failures.iter().map(|(_, n)| n.to_string()).collect();
        let took: Vec<u64> = r
            .history
            .failovers
            .iter()
            .filter_map(|f| f.took_ms)
            .collect();
        let failover = match crate::checkers::percentile(&took, 0.99) {
            Some(p) => format!("{p} ms"),
            None => "-".into(),
        };
        out.push_str(&format!(
            "{} {} {} {} {} {} {}\n",
            cell(r.scenario, 20),
            cell(r.faults, 7),
            cell(r.operations, 7),
            cell(failures.join("/"), 40),
            cell(
                r.recovery_ms
                    .map_or("never".to_string(), |m| format!("{m} ms")),
                10
            ),
            cell(failover, 13),
            if r.ok { "PASS" } else { "FAIL" }
        ));
    }
    for r in reports {
        if let Some(e) = &r.error {
            out.push_str(&format!("  {}: harness error: {e}\n", r.scenario));
        }
        for c in &r.checks {
            let mark = if c.ok { "ok  " } else { "FAIL" };
            out.push_str(&format!(
                "  {} {mark} {:<26} {}\n",
                r.scenario, c.name, c.detail
            ));
        }
    }
    out
}

/// The JSON report: every scenario with its checks; the full history only with `full`.
pub fn json(reports: &[Report], full: bool) -> serde_json::Value {
    let runs: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            if !full {
                if let Some(o) = v.as_object_mut() {
                    o.remove("history");
                    o.insert(
                        "failovers".into(),
                        serde_json::to_value(&r.history.failovers).unwrap_or_default(),
                    );
                    o.insert(
                        "fault_log".into(),
                        serde_json::to_value(&r.history.faults).unwrap_or_default(),
                    );
                }
            }
            v
        })
        .collect();
    serde_json::json!({
        "ok": reports.iter().all(|r| r.ok),
        "runs": runs,
    })
}
