use servicekit::service;

#[service(restarts = "always")]
async fn typo() {}

fn main() {}
