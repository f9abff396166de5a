//! Serde for the library's small enums that configuration files write as strings ([`BusMode`]: `"classic"`,
//! `"sharded"`; [`JwtAlgorithm`]: `"HS256"`, `"RS256"`, `"ES256"`): serialised through `Display`, deserialised
//! through `FromStr` (so parsing is as lenient, and errors are worded, as on the command line). `sealcast-server`'s
//! settings rely on these; the orphan rule keeps such impls in this crate.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::auth::JwtAlgorithm;
use crate::bus::BusMode;

macro_rules! serde_via_str {
    ($($ty:ty),* $(,)?) => {$(
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

serde_via_str!(BusMode, JwtAlgorithm);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_and_read_as_their_names() {
        assert_eq!(serde_json::to_string(&BusMode::Sharded).unwrap(), "\"sharded\"");
        assert_eq!(serde_json::to_string(&JwtAlgorithm::Es256).unwrap(), "\"ES256\"");
        assert_eq!(
            serde_json::from_str::<BusMode>("\"Classic\"").unwrap(),
            BusMode::Classic
        );
        assert_eq!(
            serde_json::from_str::<JwtAlgorithm>("\"rs256\"").unwrap(),
            JwtAlgorithm::Rs256
        );
        let e = serde_json::from_str::<BusMode>("\"fast\"").unwrap_err().to_string();
        assert!(e.contains("use classic or sharded"), "{e}");
    }
}
