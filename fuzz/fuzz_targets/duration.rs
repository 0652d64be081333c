//! Fuzzes the duration parsers behind every `--*-timeout`, `--max-*` and `--idle-*` flag:
//! `parse_duration` and `parse_optional_duration` must never panic, and what they accept must
//! survive a round trip through humantime's own formatting.
#![no_main]

use std::time::Duration;

use bootstrap::config::{parse_duration, parse_optional_duration};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Flags and environment variables reach the parsers as UTF-8 (clap refuses anything else),
    // so invalid bytes are replaced rather than skipped: the replacement character is input too.
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();

    let parsed = parse_duration(text);
    if let Ok(d) = parsed {
        // Formatting and parsing again must give the same duration, or a value logged at start-up
        // (the config is logged with humantime) would not mean what was configured.
        let formatted = humantime::format_duration(d).to_string();
        assert_eq!(
            parse_duration(&formatted),
            Ok(d),
            "{text:?} parsed to {d:?}, formatted as {formatted:?}"
        );
    }

    match parse_optional_duration(text) {
        Ok(None) => {
            let t = text.trim();
            assert!(
                t == "off" || t == "0" || parsed.as_ref().is_ok_and(Duration::is_zero),
                "{text:?} turned a setting off"
            );
        }
        Ok(Some(d)) => {
            assert!(!d.is_zero(), "{text:?} gave Some(0)");
            assert_eq!(
                parsed,
                Ok(d),
                "{text:?}: optional and plain parsers disagree"
            );
        }
        Err(_) => assert!(
            parsed.is_err(),
            "{text:?}: only the optional parser refused"
        ),
    }
});
