//! `sqlx::migrate!` embeds `migrations/` when proto compiles, but cargo only tracks
//! the Rust sources: a migration added without touching one would be missing from
//! every binary (and sqlx refuses a database holding a migration it does not know).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
