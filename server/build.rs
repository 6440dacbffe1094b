//! Rebuilds the server when a file of the field app (`client-sdk/web/`,
//! embedded by `field_app.rs`) is added, changed or removed: cargo tracks
//! the embedded files' contents, but not new files in the folder.

fn main() {
    println!("cargo:rerun-if-changed=../client-sdk/web");
}
