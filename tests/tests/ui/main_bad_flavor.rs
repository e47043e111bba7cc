#[servicekit::main(flavor = "single")]
async fn main() {}
