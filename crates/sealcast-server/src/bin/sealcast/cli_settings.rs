//! The settings flags of `serve` and `config check`, generated from the settings table
//! ([`sealcast_server::settings::KEYS`]) so that a new setting gets its flag and environment variable without code
//! here.

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};
use sealcast_server::settings::{Key, Override, Source, KEYS};

/// Every setting given as a flag or an environment variable (clap already ranks a flag over its variable).
#[derive(Debug, Clone)]
pub struct SettingArgs {
    /// The given values, with where each came from.
    pub overrides: Vec<Override>,
}

impl FromArgMatches for SettingArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let overrides = KEYS
            .iter()
            .filter_map(|key| {
                let raw = matches.get_one::<String>(key.id)?.clone();
                let source = match matches.value_source(key.id) {
                    Some(ValueSource::CommandLine) => Source::Flag,
                    _ => Source::Env,
                };
                Some(Override { key, raw, source })
            })
            .collect();
        Ok(Self { overrides })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for SettingArgs {
    fn augment_args(cmd: Command) -> Command {
        KEYS.iter().fold(cmd, |cmd, key| cmd.arg(arg(key)))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// `--name VALUE` / `SEALCAST_NAME` for one setting; no default here, so an absent flag leaves the file's value.
fn arg(key: &'static Key) -> Arg {
    let long = key.flag().trim_start_matches('-').to_owned();
    let arg = Arg::new(key.id)
        .long(long)
        .env(key.env)
        .value_name(key.name.to_ascii_uppercase())
        .help(format!("{} [config: {}]", key.help(), key.id))
        .hide_env_values(key.hide_env);
    if key.switch {
        // `--demo` alone means true, as before; `--demo false` still works.
        arg.num_args(0..=1).default_missing_value("true")
    } else {
        arg
    }
}
