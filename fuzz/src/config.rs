//! `config`: the config-file parser (`sealcast_server::Settings::load`, what `sealcast serve --config` reads).
//!
//! Oracles: nothing panics; an accepted file passes `Settings::validate`, and the effective settings printed as
//! TOML (what `sealcast config check` writes, secrets redacted) parse back to the same settings; a refused file
//! is a TOML syntax error or an error naming a key or section that really is not allowed there.

use sealcast_server::settings::{Key, Settings, SettingsError, KEYS, SECTIONS};

/// The fuzz target.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Settings::load(text, &[]) {
        Ok(effective) => {
            let settings = &effective.settings;
            assert_eq!(settings.validate(), Ok(()), "accepted settings fail validation");
            // Secrets print as `<redacted>`; the original passed every check on its value (non-empty, 32 bytes
            // beyond loopback), so the reparse takes a stand-in that does too.
            let printed = effective
                .render()
                .replace("\"<redacted>\"", "\"<redacted: a stand-in of 32 bytes or more>\"");
            let again = Settings::from_toml_str(&printed)
                .unwrap_or_else(|e| panic!("printed settings do not parse: {e}\n{printed}"));
            // Debug redacts secrets, as the printed form does.
            assert_eq!(
                format!("{again:?}"),
                format!("{settings:?}"),
                "printed settings parse differently"
            );
        }
        Err(SettingsError::Syntax(_)) => {}
        Err(SettingsError::UnknownSection { section, .. }) => {
            assert!(
                !SECTIONS.iter().any(|(s, _)| *s == section),
                "known section [{section}] refused"
            );
        }
        Err(SettingsError::NotASection(section)) => {
            assert!(
                SECTIONS.iter().any(|(s, _)| *s == section),
                "[{section}] is not a section"
            );
        }
        Err(SettingsError::UnknownKey { section, key, .. }) => {
            assert!(
                !KEYS.iter().any(|k| k.section == section && k.name == key),
                "known key {section}.{key} refused as unknown"
            );
        }
        Err(SettingsError::Invalid { key, .. }) => {
            assert!(Key::find(key).is_some(), "error names a key that does not exist: {key}");
        }
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}
