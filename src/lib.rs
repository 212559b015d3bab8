//! Runnable example jobs for Weir live in `examples/`; run one with `cargo run --release --example NAME`.
