use servicekit::service;

#[service]
async fn counts() -> anyhow::Result<u32> {
    Ok(5)
}

#[service]
async fn number() -> u32 {
    5
}

fn main() {}
