//! The Lua scripts, one `.lua` file each, loaded once into `redis::Script`s. Each
//! file's header states its `KEYS`, `ARGV`, return value and the atomicity it gives.
//!
//! `Script::invoke_async` reloads a script after `NOSCRIPT` (the cache is empty after
//! every Redis restart); a pipeline that invokes one must `load_script` it first.

use std::sync::LazyLock;

use redis::Script;

/// Swaps a rebuilt seat map in atomically (see `lua/commit_seat_map.lua`).
pub static COMMIT_SEAT_MAP: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/commit_seat_map.lua")));

/// Every script, by name, for tools that preload or benchmark them.
pub fn all() -> [(&'static str, &'static Script); 1] {
    [("commit_seat_map", &COMMIT_SEAT_MAP)]
}
