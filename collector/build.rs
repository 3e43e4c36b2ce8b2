//! Rebuilds the crate when a migration file is added: `sqlx::migrate!` embeds
//! the migrations directory, and cargo does not watch new files in it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
