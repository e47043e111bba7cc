use servicekit::service;

type Count = Option<u32>;

#[service]
async fn counts() -> Count {
    Some(5)
}

fn main() {}
