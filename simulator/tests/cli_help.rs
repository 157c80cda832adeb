//! `csms-sim --help` and every subcommand's help describe every option and
//! argument in a line.

#[path = "../../tests/common/help.rs"]
mod help;

#[test]
fn every_option_of_csms_sim_and_its_subcommands_has_a_description() {
    let undocumented = help::undocumented(std::path::Path::new(env!("CARGO_BIN_EXE_csms-sim")));
    assert!(
        undocumented.is_empty(),
        "options without a description:\n{}",
        undocumented.join("\n")
    );
}
