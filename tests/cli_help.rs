//! `csms --help` and every subcommand's help describe every option and
//! argument in a line.

#[path = "common/help.rs"]
mod help;

#[test]
fn the_help_reader_finds_options_without_a_description() {
    help::check_the_reader();
}

#[test]
fn every_option_of_csms_and_its_subcommands_has_a_description() {
    let undocumented = help::undocumented(std::path::Path::new(env!("CARGO_BIN_EXE_csms")));
    assert!(
        undocumented.is_empty(),
        "options without a description:\n{}",
        undocumented.join("\n")
    );
}
