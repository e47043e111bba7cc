use servicekit::service;

#[service(restart = "sometimes")]
async fn maybe() {}

fn main() {}
