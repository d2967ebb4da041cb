// `sqlx::migrate!` embeds the migrations: rebuild when one is added.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
