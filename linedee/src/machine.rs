//! Heroku dyno sizes, the `machine` field of a task.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! machines {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, )*) => {
        /// A Heroku dyno size. Parsed case-insensitively; written in Heroku's lowercase form.
        ///
        /// ```
        /// use linedee::Machine;
        /// assert_eq!("Standard-2X".parse::<Machine>().unwrap(), Machine::Standard2x);
        /// assert_eq!(Machine::default().as_str(), "basic");
        /// ```
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        #[non_exhaustive]
        pub enum Machine {
            $( $(#[$doc])* $variant, )*
        }

        impl Machine {
            /// Every size, in Heroku's order.
            pub const ALL: &'static [Machine] = &[$(Machine::$variant),*];

            /// Heroku's name for the size, e.g. `standard-2x`.
            pub const fn as_str(self) -> &'static str {
                match self { $(Machine::$variant => $name,)* }
            }
        }
    };
}

machines! {
    /// `eco`
    Eco => "eco",
    /// `basic`, the default.
    #[default]
    Basic => "basic",
    /// `standard-1x`
    Standard1x => "standard-1x",
    /// `standard-2x`
    Standard2x => "standard-2x",
    /// `performance-m`
    PerformanceM => "performance-m",
    /// `performance-l`
    PerformanceL => "performance-l",
    /// `performance-l-ram`
    PerformanceLRam => "performance-l-ram",
    /// `performance-xl`
    PerformanceXl => "performance-xl",
    /// `performance-2xl`
    Performance2xl => "performance-2xl",
    /// `private-s`
    PrivateS => "private-s",
    /// `private-m`
    PrivateM => "private-m",
    /// `private-l`
    PrivateL => "private-l",
    /// `private-l-ram`
    PrivateLRam => "private-l-ram",
    /// `private-xl`
    PrivateXl => "private-xl",
    /// `private-2xl`
    Private2xl => "private-2xl",
    /// `shield-s`
    ShieldS => "shield-s",
    /// `shield-m`
    ShieldM => "shield-m",
    /// `shield-l`
    ShieldL => "shield-l",
    /// `shield-l-ram`
    ShieldLRam => "shield-l-ram",
    /// `shield-xl`
    ShieldXl => "shield-xl",
    /// `shield-2xl`
    Shield2xl => "shield-2xl",
}

impl Machine {
    /// The valid names, comma-separated, for error messages.
    pub fn valid_names() -> String {
        Machine::ALL
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The error of parsing an unknown dyno size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown machine {given:?}; expected one of: {}",
    Machine::valid_names()
)]
pub struct UnknownMachine {
    /// The name that was given.
    pub given: String,
}

impl FromStr for Machine {
    type Err = UnknownMachine;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Machine::ALL
            .iter()
            .copied()
            .find(|m| m.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownMachine {
                given: s.to_owned(),
            })
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Machine {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Machine {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Machine {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Machine".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = Machine::ALL.iter().map(|m| m.as_str()).collect();
        schemars::json_schema!({
            "description": "Heroku dyno size (case-insensitive).",
            "type": "string",
            "enum": names,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips_case_insensitively() {
        for m in Machine::ALL {
            assert_eq!(m.as_str().parse::<Machine>(), Ok(*m));
            assert_eq!(m.as_str().to_uppercase().parse::<Machine>(), Ok(*m));
        }
        assert_eq!(Machine::ALL.len(), 21);
    }

    #[test]
    fn unknown_machine_lists_the_valid_ones() {
        let err = "huge".parse::<Machine>().unwrap_err().to_string();
        assert!(err.contains("\"huge\""), "{err}");
        assert!(err.contains("basic, standard-1x"), "{err}");
        assert!(err.contains("shield-2xl"), "{err}");
    }
}
