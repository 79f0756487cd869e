fn main() -> anyhow::Result<()> {
    allot::cli::main()
}
