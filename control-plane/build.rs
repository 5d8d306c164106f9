//! Rebuilds the control plane when a schema migration is added or changed:
//! `sqlx::migrate!` embeds `migrations/` at build time, and on stable Rust it
//! does not tell cargo to watch that directory (an added migration was
//! otherwise missing from an incremental build).

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
