//! The `prospeo.*` options as command-line flags, made from [`OptionKey`]: one flag an option,
//! named, described and validated as the SQL side does, so an option added to the table is a
//! flag of `prospeo enrich` without a line here.

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use datafusion_prospeo::EnrichOptions;
use datafusion_prospeo::datafusion::options::OptionKey;

/// The options given on the command line, in [`OptionKey::ALL`] order, each with its values
/// as typed (several for a repeatable flag such as `--map`).
#[derive(Debug, Clone, Default)]
pub struct OptionArgs {
    pub given: Vec<(OptionKey, Vec<String>)>,
}

impl OptionArgs {
    /// Applies the given options over `options`, through the same validation as `SET`.
    pub fn apply(&self, options: &mut EnrichOptions) -> datafusion_prospeo::Result<()> {
        for (key, values) in &self.given {
            if *key == OptionKey::Map {
                options.set_map(values.iter().map(String::as_str))?;
            } else if let Some(value) = values.last() {
                options.set_key(*key, value)?;
            }
        }
        Ok(())
    }
}

/// The clap argument of one option: the flag, its aliases, its help with the default, and
/// [`EnrichOptions::set_key`] as its value check so a bad value is refused before anything
/// starts, with the message `SET` gives.
/// Spellings in `taken` (flags the front door uses for something of its own, such as
/// `prospeo sql --format`, the result format) are left out.
pub fn option_arg(key: OptionKey, taken: &[String]) -> Option<Arg> {
    let spec = key.spec();
    let flag = spec.flag.filter(|f| !taken.iter().any(|t| t == f))?;
    // `SHOW ALL` descriptions are lower case; `--help` lines start with a capital.
    let mut chars = spec.description.chars();
    let mut help: String = chars
        .next()
        .map(|c| c.to_ascii_uppercase())
        .into_iter()
        .chain(chars)
        .collect();
    if let Some(default) = EnrichOptions::default().value_of(key) {
        help.push_str(&format!(" [default: {default}]"));
    }
    let mut arg = Arg::new(spec.name)
        .long(flag)
        .visible_aliases(
            spec.aliases
                .iter()
                .copied()
                .filter(|a| !taken.iter().any(|t| t == a)),
        )
        .help(help)
        .value_parser(move |value: &str| {
            // A coordinator URL may hold a password, which clap would repeat in its error: it
            // is checked when the options are applied, by a message that never echoes it.
            if key == OptionKey::Coordinator {
                return Ok(value.to_string());
            }
            let mut scratch = EnrichOptions::default();
            let checked = if key == OptionKey::Map {
                scratch.set_map([value])
            } else {
                scratch.set_key(key, value)
            };
            checked.map(|()| value.to_string())
        });
    arg = match spec.value_name {
        // A switch: `--enrich-mobile`, or `--enrich-mobile=false` to say it explicitly.
        None => arg
            .value_name("BOOL")
            .num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
            .action(ArgAction::Set),
        Some(name) if spec.repeatable => arg.value_name(name).action(ArgAction::Append),
        Some(name) => arg.value_name(name).action(ArgAction::Set),
    };
    Some(arg)
}

impl FromArgMatches for OptionArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let given = OptionKey::ALL
            .into_iter()
            .filter(|key| key.spec().flag.is_some())
            .filter_map(|key| {
                let values = matches.get_many::<String>(key.name())?;
                Some((key, values.cloned().collect()))
            })
            .collect();
        Ok(OptionArgs { given })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for OptionArgs {
    /// Adds a flag for every option, after the front door's own flags (flatten last).
    fn augment_args(command: Command) -> Command {
        let taken: Vec<String> = command
            .get_arguments()
            .flat_map(|a| {
                a.get_long()
                    .into_iter()
                    .chain(a.get_all_aliases().unwrap_or_default())
                    .map(str::to_string)
            })
            .collect();
        // An argument is known by the option's name; where the front door has an argument of
        // that name (`prospeo sql --format`), the option is left to `SET`.
        let ids: Vec<String> = command
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect();
        OptionKey::ALL
            .into_iter()
            .filter(|key| !ids.iter().any(|id| id == key.name()))
            .filter_map(|key| option_arg(key, &taken))
            .fold(command, Command::arg)
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}
