// The read-only TFTP server: files from disk and made-up bytes, the
// blksize and tsize options, a lost acknowledgement, block numbers past
// 65535, and every refusal with its TFTP error code and sentence.
#include "aula/common/tftp_server.hpp"

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/temp_dir.hpp"
#include "support/tftp_client.hpp"

namespace aula {
namespace {

using test::tftpGet;

class TftpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Bytes no block size divides evenly, and one that 512 does.
    big_.resize(1'000'003);
    for (std::size_t i = 0; i < big_.size(); ++i)
      big_[i] = static_cast<char>((i * 7919) % 251);
    test::writeFile(dir_.path() / "big.bin", big_);
    test::writeFile(dir_.path() / "even.bin", std::string(2048, 'e'));
    auto server =
        tftp::Server::start({.listen = "127.0.0.1:0", .retransmit = std::chrono::milliseconds(100)},
                            [this](const tftp::Request& r) -> Result<tftp::File> {
                              std::lock_guard lock(mutex_);
                              requests_.push_back(r);
                              if (r.name == "big.bin" || r.name == "even.bin")
                                return tftp::File{.path = dir_.path() / r.name, .bytes = {}};
                              if (r.name == "made")
                                return tftp::File{.path = {}, .bytes = "made for " + r.peerHost};
                              if (r.name == "gone")
                                return tftp::File{.path = dir_.path() / "missing", .bytes = {}};
                              if (r.name == "secret")
                                return Error(Errc::kPermissionDenied, "Not for you.");
                              return makeError(Errc::kNotFound, "There is no {} here.", r.name);
                            });
    ASSERT_TRUE(server) << server.error().message();
    server_ = std::move(*server);
  }

  test::TempDir dir_;
  std::string big_;
  std::mutex mutex_;
  std::vector<tftp::Request> requests_;
  std::unique_ptr<tftp::Server> server_;
};

TEST_F(TftpServerTest, SendsAFileFromDiskInPlainBlocksAndMadeUpBytes) {
  auto got = tftpGet("127.0.0.1", server_->port(), "big.bin", {.timeoutMs = 20000});
  ASSERT_TRUE(got.ok) << got.errorText;
  EXPECT_EQ(got.data, big_);
  EXPECT_TRUE(got.oack.empty());  // no options asked, none answered

  auto made = tftpGet("127.0.0.1", server_->port(), "made");
  ASSERT_TRUE(made.ok) << made.errorText;
  EXPECT_EQ(made.data, "made for 127.0.0.1");
  std::lock_guard lock(mutex_);
  EXPECT_EQ(requests_.back().localHost, "127.0.0.1");
}

TEST_F(TftpServerTest, AnswersBlockSizeAndSizeOptionsAndCapsTheBlockAtOneFrame) {
  auto got = tftpGet("127.0.0.1", server_->port(), "big.bin",
                     {.blockSize = 8192, .askSize = true, .timeoutMs = 20000});
  ASSERT_TRUE(got.ok) << got.errorText;
  EXPECT_EQ(got.data, big_);
  EXPECT_EQ(got.oack["blksize"], "1468");
  EXPECT_EQ(got.oack["tsize"], "1000003");

  auto small = tftpGet("127.0.0.1", server_->port(), "made", {.blockSize = 1024, .askSize = true});
  ASSERT_TRUE(small.ok);
  EXPECT_EQ(small.oack["blksize"], "1024");
  EXPECT_EQ(small.oack["tsize"], "18");
}

TEST_F(TftpServerTest, EndsAFileOfWholeBlocksWithAnEmptyOne) {
  auto got = tftpGet("127.0.0.1", server_->port(), "even.bin");
  ASSERT_TRUE(got.ok) << got.errorText;
  EXPECT_EQ(got.data, std::string(2048, 'e'));
  EXPECT_EQ(got.blocksReceived, 5u);  // four full blocks, then an empty one
}

TEST_F(TftpServerTest, SendsABlockAgainWhenItsAcknowledgementIsLost) {
  auto got = tftpGet("127.0.0.1", server_->port(), "big.bin",
                     {.blockSize = 1468, .loseAckEvery = 100, .timeoutMs = 20000});
  ASSERT_TRUE(got.ok) << got.errorText;
  EXPECT_EQ(got.data, big_);
  const std::uint64_t blocks = big_.size() / 1468 + 1;
  EXPECT_EQ(got.blocksReceived, blocks + blocks / 100);  // each lost one came twice
}

TEST_F(TftpServerTest, NumbersBlocksPast65535ByWrappingToZero) {
  // 1,000,003 bytes in blocks of 12: 83,334 blocks, so the number wraps.
  auto got =
      tftpGet("127.0.0.1", server_->port(), "big.bin", {.blockSize = 12, .timeoutMs = 60000});
  ASSERT_TRUE(got.ok) << got.errorText;
  EXPECT_EQ(got.data, big_);
}

TEST_F(TftpServerTest, RefusalsCarryTheirCodeAndSentence) {
  auto missing = tftpGet("127.0.0.1", server_->port(), "nothing");
  EXPECT_FALSE(missing.ok);
  EXPECT_EQ(missing.errorCode, 1);
  EXPECT_EQ(missing.errorText, "There is no nothing here.");

  auto secret = tftpGet("127.0.0.1", server_->port(), "secret");
  EXPECT_EQ(secret.errorCode, 2);
  EXPECT_EQ(secret.errorText, "Not for you.");

  auto gone = tftpGet("127.0.0.1", server_->port(), "gone");
  EXPECT_EQ(gone.errorCode, 1);
  EXPECT_EQ(gone.errorText, "The file cannot be read on the server.");

  auto mail = tftpGet("127.0.0.1", server_->port(), "made", {.mode = "mail"});
  EXPECT_EQ(mail.errorCode, 4);
  EXPECT_EQ(mail.errorText, "The mode 'mail' is not served; ask for octet.");
}

TEST_F(TftpServerTest, RefusesWritesAndServesManyClientsAtOnce) {
  // A write request, by hand: opcode 2.
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<std::uint16_t>(server_->port()));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const std::string wrq("\0\2x\0octet\0", 10);
  ::sendto(fd, wrq.data(), wrq.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to));
  char reply[200] = {};
  timeval tv{.tv_sec = 3, .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  const ssize_t n = ::recv(fd, reply, sizeof(reply) - 1, 0);
  ::close(fd);
  ASSERT_GT(n, 4);
  EXPECT_EQ(reply[1], 5);  // ERROR
  EXPECT_EQ(reply[3], 2);  // access violation
  EXPECT_STREQ(reply + 4, "This server only sends files; it takes none.");

  std::vector<std::thread> clients;
  clients.reserve(30);
  std::atomic<int> right{0};
  for (int i = 0; i < 30; ++i) {
    clients.emplace_back([&] {
      auto got =
          tftpGet("127.0.0.1", server_->port(), "big.bin", {.blockSize = 1468, .timeoutMs = 60000});
      if (got.ok && got.data == big_)
        ++right;
    });
  }
  for (auto& c : clients)
    c.join();
  EXPECT_EQ(right.load(), 30);
}

TEST(TftpServerStartTest, SaysWhatIsWrongWithTheListenAddress) {
  auto bad = tftp::Server::start({.listen = "nowhere"}, {});
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("'nowhere'"), std::string::npos) << bad.error().message();
}

}  // namespace
}  // namespace aula
