use servicekit::service;

#[service(max_restarts = "5")]
async fn quoted() {}

fn main() {}
