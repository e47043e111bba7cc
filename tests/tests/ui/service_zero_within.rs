use servicekit::service;

#[service(max_restarts = 3, within = "0s")]
async fn never_counts() {}

fn main() {}
