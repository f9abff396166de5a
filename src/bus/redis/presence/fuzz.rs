//! What presence reads back from Redis, under arbitrary input: the fuzz target `redis_presence`.
//!
//! Redis is where the fleet's presence lives, so everything it hands back is parsed as hostile input (a corrupted
//! key, another program writing under the prefix, a Redis that is not one). [`check`] reads its input as one byte,
//! the query's `max` (the most members listed, `presence_max_members`), then a RESP2/RESP3 reply as Redis sends
//! it (`redis::parse_redis_value`, the client's own parser), and feeds that reply to every reader of the worker:
//!
//! - the `QUERY` script's answer `{clients, users, {client, value, …}}` (`parse_query`) and the answer's JSON (what
//!   a client's `presence` event and `POST /api/presence` return);
//! - the `PURGE` script's answer `{clients left, {client, value, …}}` (`purge_answer`);
//! - the `HEARTBEAT` script's answer `{new, {dead instance, …}}` (`two`, `dead_instances`);
//! - an instance's rooms set (`SMEMBERS`, `listed_rooms`).
//!
//! The same bytes are also read as one member entry, `client \n value` (a client id and an entry value, the
//! `"<instance> <since ms> u<user>"` / `"<instance> <since ms> -"` of the members hash), so the fuzzer reaches the
//! entry grammar without RESP's length prefixes.
//!
//! Oracles, beyond "no panic": every reader agrees with an independent reading written here (so malformed entries
//! are skipped, never fatal, and well-formed ones are never lost); the output is bounded (at most `max` members,
//! at most [`DEAD_PER_BEAT`] dead instances, ids and names within their limits, the JSON answer within a size
//! derived from them); an accepted entry's user is the one the scripts' Lua `user_of` reads (the users count) and
//! the writer's own value for it parses back to the same member; the JSON answer carries exactly the parsed
//! fields, `since` formatted by an independent civil-date conversion.
//!
//! The unit tests below replay `fuzz/corpus/redis_presence` and `fuzz/regressions/redis_presence`.

// An oracle: failing a check by panicking is its job, and a missing JSON field indexes as `null`.
#![allow(clippy::indexing_slicing)]

use redis::Value;

use super::{
    dead_instances, listed_rooms, member, parse_query, purge_answer, two, value, DEAD_PER_BEAT, MAX_INSTANCE_LEN,
};
use crate::presence::MAX_SINCE_MS;
use crate::protocol::envelope::MAX_TARGET_LEN;
use crate::protocol::{ClientId, RoomName, UserId};

/// The instance doing the reading (a server id is a UUID).
const ME: &str = "6f1c2b3a-9d4e-4f5a-8b6c-7d8e9fa0b1c2";
/// The room queried.
const ROOM: &str = "chat:1";

/// What an input reached (for the unit tests: the seeds must get past the shallow refusals).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reached {
    /// The reply parsed as RESP.
    pub(crate) resp: bool,
    /// Members listed by an accepted query answer.
    pub(crate) query_members: Option<usize>,
    /// Members of an accepted purge answer.
    pub(crate) purged: Option<usize>,
    /// Dead instances of an accepted heartbeat answer.
    pub(crate) dead: Option<usize>,
    /// Rooms of an accepted rooms set.
    pub(crate) rooms: Option<usize>,
    /// The input read as `client \n value` is a member entry.
    pub(crate) entry: bool,
}

/// The fuzz target: panics when an oracle fails.
pub fn check(data: &[u8]) {
    run(data);
}

/// [`check`], telling what the input reached.
pub(crate) fn run(data: &[u8]) -> Reached {
    let mut reached = Reached::default();
    let Some((&first, rest)) = data.split_first() else {
        return reached;
    };
    let max = usize::from(first);
    if let Ok(v) = redis::parse_redis_value(rest) {
        reached.resp = true;
        reached.query_members = check_query(&v, max);
        reached.purged = check_purge(&v);
        reached.dead = check_heartbeat(&v);
        reached.rooms = check_rooms(&v);
    }
    let (client, entry) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (rest.get(..i).unwrap_or_default(), rest.get(i + 1..).unwrap_or_default()),
        None => (&[][..], rest),
    };
    reached.entry = check_entry(&Value::BulkString(client.to_vec()), &Value::BulkString(entry.to_vec()));
    if let (Ok(c), Ok(e)) = (std::str::from_utf8(client), std::str::from_utf8(entry)) {
        // The same entry as simple strings (a RESP3 or proxy answer may use them).
        let simple = check_entry(&Value::SimpleString(c.to_owned()), &Value::SimpleString(e.to_owned()));
        assert_eq!(
            simple, reached.entry,
            "a simple string read differently from a bulk string"
        );
    }
    reached
}

/// A member as the independent reading sees it: canonical client id, user, since (ms).
type Reading = (String, Option<String>, u64);

/// One entry through `member`, against the independent reading; true when accepted.
fn check_entry(c: &Value, v: &Value) -> bool {
    let got = member(c, v);
    let want = reading(c, v);
    let seen = got
        .as_ref()
        .map(|(client, user, since)| (client.to_string(), user.as_ref().map(|u| u.as_str().to_owned()), *since));
    assert_eq!(seen, want, "entry {c:?} = {v:?} read differently");
    let Some((client, user, since)) = got else {
        return false;
    };
    assert!(since <= MAX_SINCE_MS);
    // The scripts count users by what their Lua `user_of` reads out of the same value.
    let text = as_text(v).unwrap_or_default();
    assert_eq!(
        lua_user_of(&text),
        user.as_ref().map(UserId::as_str),
        "Lua reads another user out of {text:?}"
    );
    // The writer's value for this member parses back to it (and its instance prefix is what REMOVE/PURGE match).
    let written = value(ME, since, user.as_ref());
    assert!(written.starts_with(&format!("{ME} ")));
    let back = member(
        &Value::BulkString(client.to_string().into_bytes()),
        &Value::BulkString(written.into_bytes()),
    );
    assert_eq!(
        back,
        Some((client, user, since)),
        "the writer's value does not read back"
    );
    true
}

/// The `QUERY` answer: `Some(members)` when accepted.
fn check_query(v: &Value, max: usize) -> Option<usize> {
    let room = RoomName::parse(ROOM)?;
    let got = parse_query(&room, v, max);
    let want = match v {
        Value::Array(parts) => match parts.as_slice() {
            [clients, users, Value::Array(list)] => match (count(clients), count(users)) {
                (Some(clients), Some(users)) => Some((clients, users, list)),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    };
    assert_eq!(
        got.is_some(),
        want.is_some(),
        "query answer {v:?} accepted: {}",
        got.is_some()
    );
    let (p, (clients, users, list)) = got.zip(want)?;
    let members: Vec<Reading> = list
        .chunks(2)
        .take(max)
        .filter_map(|pair| match pair {
            [c, v] => reading(c, v),
            _ => None,
        })
        .collect();
    let seen: Vec<Reading> = p
        .members
        .iter()
        .map(|m| {
            let since = m
                .since
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            (
                m.client.clone(),
                m.user.clone(),
                u64::try_from(since).unwrap_or(u64::MAX),
            )
        })
        .collect();
    assert_eq!(seen, members, "query members differ from the independent reading");
    assert!(p.members.len() <= max && p.members.len() <= list.len() / 2);
    assert_eq!((p.room.as_str(), p.clients, p.users), (ROOM, clients, users));
    assert_eq!(p.truncated, p.members.len() < clients);

    // The answer's JSON: exactly these fields, bounded by what they may hold.
    let json = p.to_json();
    let bound = 128 + p.members.len() * (128 + 6 * MAX_TARGET_LEN);
    assert!(
        json.len() <= bound,
        "answer of {} bytes for {} members",
        json.len(),
        p.members.len()
    );
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    assert_eq!(parsed["room"], ROOM, "{json}");
    assert_eq!(parsed["clients"].as_u64(), u64::try_from(clients).ok(), "{json}");
    assert_eq!(parsed["users"].as_u64(), u64::try_from(users).ok(), "{json}");
    assert_eq!(parsed["truncated"].as_bool(), Some(p.truncated), "{json}");
    let listed = parsed["members"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), members.len(), "{json}");
    for (m, (client, user, since)) in listed.iter().zip(&members) {
        assert_eq!(m["client"].as_str(), Some(client.as_str()), "{json}");
        assert_eq!(m["user"].as_str(), user.as_deref(), "{json}");
        assert_eq!(m["since"].as_str(), Some(iso(*since).as_str()), "{json}");
    }
    Some(p.members.len())
}

/// The `PURGE` answer: `Some(members)` when accepted.
fn check_purge(v: &Value) -> Option<usize> {
    let got = purge_answer(v.clone()).ok();
    let want = match v {
        Value::Array(parts) => match parts.as_slice() {
            [left, Value::Array(removed)] => signed(left).map(|left| (usize::try_from(left).unwrap_or(0), removed)),
            _ => None,
        },
        _ => None,
    };
    assert_eq!(
        got.is_some(),
        want.is_some(),
        "purge answer {v:?} accepted: {}",
        got.is_some()
    );
    let ((left, count, members), (want_left, removed)) = got.zip(want)?;
    assert_eq!((left, count), (want_left, removed.len() / 2));
    let seen: Vec<(String, Option<String>)> = members
        .iter()
        .map(|(c, u)| (c.to_string(), u.as_ref().map(|u| u.as_str().to_owned())))
        .collect();
    let want: Vec<(String, Option<String>)> = removed
        .chunks(2)
        .filter_map(|pair| match pair {
            [c, v] => reading(c, v).map(|(c, u, _)| (c, u)),
            _ => None,
        })
        .collect();
    assert_eq!(seen, want, "purged members differ from the independent reading");
    assert!(members.len() <= count);
    Some(members.len())
}

/// The `HEARTBEAT` answer: `Some(dead instances)` when accepted.
fn check_heartbeat(v: &Value) -> Option<usize> {
    let parts = two(v.clone()).ok();
    assert_eq!(
        parts.is_some(),
        matches!(v, Value::Array(p) if p.len() == 2),
        "two-part answer {v:?}"
    );
    let (_new, dead) = parts?;
    let got = dead_instances(&dead, ME);
    let want: Option<Vec<String>> = match &dead {
        Value::Array(list) => Some(
            list.iter()
                .take(DEAD_PER_BEAT)
                .filter_map(as_text)
                .filter(|id| id != ME && id.len() <= MAX_INSTANCE_LEN)
                .collect(),
        ),
        _ => None,
    };
    assert_eq!(got, want, "dead instances of {dead:?}");
    let got = got?;
    assert!(got.len() <= DEAD_PER_BEAT && got.iter().all(|id| id != ME && id.len() <= MAX_INSTANCE_LEN));
    Some(got.len())
}

/// An instance's rooms set: `Some(rooms)` when accepted.
fn check_rooms(v: &Value) -> Option<usize> {
    let rooms = listed_rooms(v.clone()).ok()?;
    let entries = match v {
        Value::Array(items) | Value::Set(items) => items.len(),
        _ => 1,
    };
    assert!(rooms.len() <= entries, "{} rooms out of {entries} entries", rooms.len());
    for room in &rooms {
        let name = room.as_str();
        assert!(!name.is_empty() && name.len() <= MAX_TARGET_LEN);
        // Entries that are strings are taken as they are (redis-rs also turns numbers into text).
        if let Value::Array(items) | Value::Set(items) = v {
            if items.iter().all(|i| as_bytes(i).is_some()) {
                assert!(
                    items.iter().any(|i| as_bytes(i) == Some(name.as_bytes())),
                    "room {name:?} not listed"
                );
            }
        }
    }
    Some(rooms.len())
}

// The independent reading.

fn as_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// A bulk or simple string's UTF-8 text.
fn as_text(v: &Value) -> Option<String> {
    std::str::from_utf8(as_bytes(v)?).ok().map(str::to_owned)
}

/// A member entry: the client's canonical id, then `<instance> <since> u<user>` or `<instance> <since> -` with
/// `since` a decimal no later than [`MAX_SINCE_MS`] and a user of 1 to [`MAX_TARGET_LEN`] bytes (anything,
/// spaces included, after the `u`).
fn reading(c: &Value, v: &Value) -> Option<Reading> {
    let client = client_reading(&as_text(c)?)?;
    let v = as_text(v)?;
    let (_instance, rest) = v.split_once(' ')?;
    let (since, user) = rest.split_once(' ')?;
    let since = decimal(since.strip_prefix('+').unwrap_or(since))?;
    if since > MAX_SINCE_MS {
        return None;
    }
    let user = if user == "-" {
        None
    } else {
        let u = user.strip_prefix('u')?;
        if u.is_empty() || u.len() > MAX_TARGET_LEN {
            return None;
        }
        Some(u.to_owned())
    };
    Some((client, user, since))
}

/// A client id: a UUID, hyphenated (8-4-4-4-12) or as 32 hex digits, in either case, shown hyphenated in lower
/// case. The other forms the `uuid` crate reads (braced, URN) are taken from `ClientId::parse`.
fn client_reading(text: &str) -> Option<String> {
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let groups: Vec<&str> = text.split('-').collect();
    let digits = match groups.as_slice() {
        [a, b, c, d, e]
            if [a.len(), b.len(), c.len(), d.len(), e.len()] == [8, 4, 4, 4, 12] && groups.iter().all(|g| hex(g)) =>
        {
            groups.concat()
        }
        [all] if all.len() == 32 && hex(all) => (*all).to_owned(),
        _ => return ClientId::parse(text).map(|id| id.to_string()),
    };
    let d = digits.to_ascii_lowercase();
    let mine = format!("{}-{}-{}-{}-{}", &d[..8], &d[8..12], &d[12..16], &d[16..20], &d[20..]);
    assert_eq!(
        ClientId::parse(text).map(|id| id.to_string()),
        Some(mine.clone()),
        "client id {text:?}"
    );
    Some(mine)
}

/// ASCII digits (at least one) as a `u64`, or `None` (not digits, or too large).
fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.bytes().try_fold(0u64, |n, b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// A Redis integer as the scripts send it (a RESP integer or a decimal string, optionally signed) within `i64`.
fn signed(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => {
            let s = std::str::from_utf8(b).ok()?;
            let (negative, digits) = match s.as_bytes().first() {
                Some(b'-') => (true, &s[1..]),
                Some(b'+') => (false, &s[1..]),
                _ => (false, s),
            };
            let n = i128::from(decimal(digits)?);
            i64::try_from(if negative { -n } else { n }).ok()
        }
        _ => None,
    }
}

/// A count: a non-negative [`signed`].
fn count(v: &Value) -> Option<usize> {
    usize::try_from(signed(v)?).ok()
}

/// The scripts' Lua `user_of`: after the second space, `u` then the user (`string.find` with plain search).
fn lua_user_of(v: &str) -> Option<&str> {
    let a = v.find(' ')?;
    let b = a + 1 + v[a + 1..].find(' ')?;
    v[b + 1..].strip_prefix('u')
}

/// `ms` after the Unix epoch as RFC 3339 with milliseconds (days to a civil date: H. Hinnant's algorithm).
fn iso(ms: u64) -> String {
    let (secs, milli) = (ms / 1000, ms % 1000);
    let (days, rem) = (i64::try_from(secs / 86_400).unwrap_or(i64::MAX), secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(dir: &str) -> Vec<(String, Vec<u8>)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir);
        let Ok(entries) = std::fs::read_dir(root) else {
            return Vec::new();
        };
        let mut files: Vec<(String, Vec<u8>)> = entries
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap_or_default(),
                )
            })
            .filter(|(name, _)| !name.starts_with('.'))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn committed_corpus_and_regressions_keep_every_oracle() {
        let corpus = inputs("corpus/redis_presence");
        assert!(corpus.len() >= 5, "only {} seeds", corpus.len());
        for (_, data) in corpus.iter().chain(&inputs("regressions/redis_presence")) {
            check(data);
        }
    }

    #[test]
    fn seeds_reach_every_reader() {
        let seeds: std::collections::HashMap<String, Vec<u8>> = inputs("corpus/redis_presence").into_iter().collect();
        let run_seed = |name: &str| run(seeds.get(name).unwrap_or_else(|| panic!("seed {name}")));
        assert_eq!(run_seed("query").query_members, Some(3));
        assert_eq!(run_seed("query_truncated").query_members, Some(2));
        assert_eq!(run_seed("query_malformed_entries").query_members, Some(1));
        assert_eq!(run_seed("purge").purged, Some(2));
        assert_eq!(run_seed("heartbeat").dead, Some(2));
        assert_eq!(run_seed("rooms").rooms, Some(2));
        assert!(run_seed("entry_user").entry && run_seed("entry_no_user").entry);
        assert!(!run_seed("entry_since_year_10000").entry);
    }

    #[test]
    fn the_civil_date_reading_agrees_on_known_times() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso(MAX_SINCE_MS), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn generated_replies_keep_every_oracle() {
        // A deterministic walk over short RESP replies built from the grammar's pieces.
        let pieces: [&[u8]; 12] = [
            b"*3\r\n",
            b"*2\r\n",
            b":3\r\n",
            b":-1\r\n",
            b"$36\r\n0b6d9c2e-8f0a-4c59-9a57-3f2f1f7d3c11\r\n",
            b"+0b6d9c2e8f0a4c599a573f2f1f7d3c11\r\n",
            b"+i 1700000000000 ualice\r\n",
            b"+i 99999999999999999 -\r\n",
            b"+i 5 -\r\n",
            b"*0\r\n",
            b"$-1\r\n",
            b"+x\r\n",
        ];
        let mut state: u64 = 0x5eed_0f9e_5e11_ce00;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut data = vec![(state % 5) as u8];
            let mut s = state;
            for _ in 0..(state >> 60) + 2 {
                data.extend_from_slice(pieces[(s % 12) as usize]);
                s /= 12;
            }
            check(&data);
        }
    }
}
