use servicekit::service;

#[service]
async fn answer() -> u32 {
    42
}

fn main() {}
