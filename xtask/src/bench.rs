pub fn bench(_w: Option<&str>) -> anyhow::Result<()> {
    anyhow::bail!("todo")
}
