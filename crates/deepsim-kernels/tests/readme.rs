//! The README's example is the `ANCHOR` part of a runnable example (named below): the example
//! compiles with the tests, and this test holds the README to its text.

#[test]
fn readme_shows_the_example() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let (readme, example) = (read("README.md"), read("examples/conv_vs_candle/main.rs"));
    let region = example
        .split_once("// ANCHOR: readme\n")
        .and_then(|(_, rest)| rest.split_once("// ANCHOR_END: readme"))
        .map(|(region, _)| region)
        .expect("examples/conv_vs_candle/main.rs marks its README part with ANCHOR comments");
    let block = format!("```rust\n{region}```\n");
    assert!(
        readme.contains(&block),
        "README.md must show this code of examples/conv_vs_candle/main.rs, as it is there:\n{block}"
    );
}
