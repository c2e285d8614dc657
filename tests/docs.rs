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
fn readme_lists_every_reply_number() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert_eq!(
        between(&readme, "<!-- replies:begin -->", "<!-- replies:end -->"),
        smtpf_milter::reply::catalog::markdown_table(),
        "README.md is stale: paste the output of `smtpf-milter explain --markdown --replies`"
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
fn documented_defaults_are_the_defaults() {
    // Every default shown in docs/configuration.md, written into a file, is the embedded config.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md")).unwrap();
    let table = between(&doc, "<!-- keys:begin -->", "<!-- keys:end -->");
    let mut file = String::new();
    for row in table.lines().skip(2) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let (key, default) = (cells[0].trim_start_matches("| ").trim_matches('`'), cells[1].trim_matches('`'));
        if default != "(see text)" {
            file.push_str(&format!("{key} = {default}\n"));
        }
    }
    assert!(file.lines().count() >= 38, "{file}");
    let c = smtpf_milter::config::Config::from_toml(&file, None).unwrap_or_else(|e| panic!("{e}\n{file}"));
    assert_eq!(c, smtpf_milter::config::Config::default(), "{file}");
}

#[test]
fn readme_shows_the_two_commands() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(readme.contains("cargo run --release -- --config contrib/smtpf-milter.toml"));
    assert!(readme.contains("cargo test"));
}

#[test]
fn every_commented_example_in_the_shipped_config_is_valid() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/smtpf-milter.toml")).unwrap();
    // Uncomment `#key = value` lines (not prose), so each documented example is checked.
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.chars().next().is_some_and(|c| c.is_ascii_lowercase()) && rest.contains(" = ") => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let c = smtpf_milter::config::Config::from_toml(&uncommented, None).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    assert_eq!(c.grey_temp_fail_period, 600);
    assert!(!c.dns_bl.is_empty() && !c.dns_wl.is_empty());
}
