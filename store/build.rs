//! `sqlx::migrate!` embeds the migrations at compile time; without this, a
//! migration added to the directory is not seen until something else in the
//! crate changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
