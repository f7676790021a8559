//! Rule generation against Istio's capture goldens: every case of
//! `../shared/testdata/istio-iptables/cases.json`, the transcript Istio's test records
//! (state probes, IPv4 and IPv6 restore payloads, final dumps), compared as Istio
//! compares it (surrounding whitespace trimmed).

use iptables_init::capture;
use tests::istio_iptables::{case_settings, cases, testdata};

#[test]
fn every_case_matches_istios_golden() {
    let cases = cases();
    assert_eq!(cases.len(), 14);
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().expect("name");
        let golden = std::fs::read_to_string(testdata(case["golden"].as_str().expect("golden")))
            .expect("golden file");
        let got = capture::transcript(&capture::rules(&case_settings(case)));
        if got.trim() != golden.trim() {
            failures.push(format!("--- {name}: want\n{golden}\n--- got\n{got}"));
        }
        assert_eq!(
            golden.trim().lines().count(),
            case["golden_lines"].as_u64().expect("golden_lines") as usize,
            "{name}: the golden file is the one cases.json describes"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
