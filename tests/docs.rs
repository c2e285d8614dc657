//! The README's message list and the configuration reference are the code's own tables.

fn between<'a>(text: &'a str, begin: &str, end: &str) -> &'a str {
    let start = text.find(begin).expect("begin marker") + begin.len();
    let stop = text.find(end).expect("end marker");
    text[start..stop].trim_start_matches('\n')
}

#[test]
fn readme_lists_every_numbered_message() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert_eq!(
        between(&readme, "<!-- messages:begin -->", "<!-- messages:end -->"),
        smtpf_milter::log::catalog::markdown_table(),
        "README.md is stale: paste the output of `smtpf-milter explain --markdown`"
    );
}

#[test]
fn configuration_reference_lists_every_key() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md")).unwrap();
    assert_eq!(
        between(&doc, "<!-- keys:begin -->", "<!-- keys:end -->"),
        smtpf_milter::config::markdown_table(),
        "docs/configuration.md is stale: paste the output of `smtpf-milter keys --markdown`"
    );
}

#[test]
fn readme_shows_the_two_commands() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(readme.contains("cargo run --release -- --config contrib/smtpf-milter.toml"));
    assert!(readme.contains("cargo test"));
}
