//! Migrations are embedded into the binary (refinery's `embed_migrations!`); rebuild when the
//! folder changes, including when a new file is added.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
