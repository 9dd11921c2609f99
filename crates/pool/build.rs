//! Declares the `loom` cfg, under which the free list is model-checked:
//! `RUSTFLAGS="--cfg loom" cargo test -p gamewire-pool --lib --release`.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(loom)");
}
