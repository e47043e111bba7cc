#[servicekit::main]
async fn main() -> u32 {
    5
}
