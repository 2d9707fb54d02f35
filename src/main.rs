use clap::Parser;

fn main() {
    let cli = stowage::commands::Cli::parse();
    std::process::exit(stowage::commands::run(cli));
}
