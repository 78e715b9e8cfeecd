//! `cutover completions SHELL` and `cutover man`: generated from the same clap
//! definitions that parse the command line, so they cannot drift from it.

use std::process::ExitCode;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Prints the completion script for `shell` of the whole command (`full` includes the
/// demo's commands, added by `main.rs`).
pub fn completions(mut full: clap::Command, shell: Shell) -> ExitCode {
    let name = full.get_name().to_string();
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    // Into memory first: the generator panics on a write error (a closed pipe).
    let mut buf: Vec<u8> = Vec::new();
    clap_complete::generate(shell, &mut full, name, &mut buf);
    print_bytes(&buf)
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is not an error.
fn print_bytes(bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            super::output::fail(1, "io", format!("cannot write to stdout: {e}"))
        }
        _ => ExitCode::SUCCESS,
    }
}

/// Prints the man page (roff): `cutover man | man -l -`. Each subcommand gets a
/// section with its own synopsis and options.
pub fn man(full: clap::Command) -> ExitCode {
    match render(full) {
        Ok(text) => print_bytes(text.as_bytes()),
        Err(e) => super::output::fail(1, "io", format!("cannot render the man page: {e}")),
    }
}

/// The page: the top-level command, then one `SUBCOMMAND` section per command.
pub fn render(full: clap::Command) -> std::io::Result<String> {
    let full = {
        let mut c = full;
        c.build();
        c
    };
    let mut buf: Vec<u8> = Vec::new();
    clap_mangen::Man::new(full.clone()).render(&mut buf)?;
    for sub in full.get_subcommands().filter(|s| s.get_name() != "help") {
        let title = format!("{} {}", full.get_name(), sub.get_name());
        buf.extend_from_slice(format!(".SH \"{}\"\n", title.to_uppercase()).as_bytes());
        let man = clap_mangen::Man::new(sub.clone().bin_name(title.clone()));
        let mut desc = Vec::new();
        man.render_description_section(&mut desc)?;
        buf.extend(strip_section_header(&desc));
        buf.extend_from_slice(b".SS SYNOPSIS\n");
        let mut syn = Vec::new();
        man.render_synopsis_section(&mut syn)?;
        buf.extend(strip_section_header(&syn));
        let mut opts = Vec::new();
        man.render_options_section(&mut opts)?;
        if !opts.is_empty() {
            buf.extend_from_slice(b".SS OPTIONS\n");
            buf.extend(strip_section_header(&opts));
        }
    }
    // roff input is ASCII: other characters as groff's `\[uXXXX]` escapes.
    Ok(String::from_utf8_lossy(&buf)
        .chars()
        .map(|c| match c {
            c if c.is_ascii() => c.to_string(),
            c => format!("\\[u{:04X}]", c as u32),
        })
        .collect())
}

/// A rendered section without its `.SH` line (the subcommand's parts are `.SS`).
fn strip_section_header(text: &[u8]) -> Vec<u8> {
    let s = String::from_utf8_lossy(text);
    s.lines()
        .filter(|l| !l.starts_with(".SH "))
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect()
}
