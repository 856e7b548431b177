// One client's HTTP/1.1 connection (Boost.Beast), protocol only: it reads each request under
// one deadline that covers headers and body (a client that trickles bytes cannot extend it),
// with header and body size limits; hands it to a Handler; writes the answer (a whole body,
// or a stream of chunks, e.g. server-sent events) with a deadline on every write; and keeps
// the connection alive for the next request. While an answer is pending it watches the
// socket, so a client that goes away is noticed even when nothing is being written to it.
//
// Everything runs on the connection's strand: the handler is called there, and callers from
// other threads (the engine's) post their work to executor() first. Internal to server/.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace fp6serve::server {

namespace net = boost::asio;
namespace http = boost::beast::http;
using Request = http::request<http::string_body>;

struct ConnectionLimits {
  size_t max_header_bytes = 64 << 10;
  size_t max_body_bytes = 8 << 20;
  std::chrono::milliseconds request_timeout{30000};  // whole request, idle keep-alive included
  std::chrono::milliseconds write_timeout{60000};    // one write (a client not reading)
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  class Handler {
   public:
    virtual ~Handler() = default;
    // A complete request; answer it with reply() or begin_stream()/send()/end_stream().
    virtual void on_request(const std::shared_ptr<Connection>& connection, Request request) = 0;
    // A request that could not be read (too large, malformed, too slow): answer it with
    // reply(); the connection closes after.
    virtual void on_unreadable(const std::shared_ptr<Connection>& connection, http::status status,
                               const std::string& why) = 0;
    // An answer went out whole (status), or the client left first (499): for the access log.
    // request_line is "METHOD target", control bytes replaced, at most 200 bytes.
    virtual void on_answered(const std::string& request_line, int status, double seconds) {
      (void)request_line, (void)status, (void)seconds;
    }
  };

  // `slot` is held for the connection's life (the server counts open connections by it).
  Connection(net::ip::tcp::socket socket, const ConnectionLimits& limits, Handler& handler, std::shared_ptr<void> slot);
  void start();

  net::any_io_executor executor() { return stream_.get_executor(); }

  // The answer to the current request: a whole body. The connection then reads the next
  // request, or closes (close, or the client asked to).
  void reply(http::status status, std::string content_type, std::string body, bool close = false,
             std::vector<std::pair<std::string, std::string>> headers = {});
  // The answer as a stream: the headers now (chunked), then each send() as one chunk, in
  // order, then end_stream().
  void begin_stream(std::string content_type);
  // Headers added to the answer of the current request (reply or stream), e.g. CORS's.
  void add_answer_headers(std::vector<std::pair<std::string, std::string>> headers) {
    answer_headers_ = std::move(headers);
  }
  void send(std::string data);
  void end_stream();

  // Called once, on the strand, if the client leaves (or a write times out) before the
  // current answer is complete.
  void on_gone(std::function<void()> fn) { on_gone_ = std::move(fn); }
  bool gone() const { return gone_; }

 private:
  void read_request();
  void on_read(boost::beast::error_code ec);
  void reject(http::status status, const std::string& why);  // answer a request that cannot be read, then close
  void watch();
  void write_next();
  void after_write(boost::beast::error_code ec);
  void finish_answer();
  double answer_seconds() const;
  void lost();
  void close();

  boost::beast::tcp_stream stream_;
  ConnectionLimits limits_;
  Handler& handler_;
  std::shared_ptr<void> slot_;
  boost::beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool keep_alive_ = false;
  std::vector<std::pair<std::string, std::string>> answer_headers_;
  std::string request_line_;  // for on_answered
  int status_ = 0;
  std::chrono::steady_clock::time_point started_;
  bool answering_ = false;  // a request is being answered
  bool watching_ = false;   // a read is pending to notice the client leaving
  bool streaming_ = false;
  bool writing_ = false;
  bool ending_ = false;  // end_stream() was called: the last chunk follows the queue
  bool close_after_ = false;
  bool gone_ = false;
  std::function<void()> on_gone_;
  // What is being written: a whole response, the stream's headers, or queued chunks.
  std::optional<http::response<http::string_body>> response_;
  std::optional<http::response<http::empty_body>> stream_head_;
  std::optional<http::response_serializer<http::empty_body>> head_serializer_;
  std::deque<std::string> chunks_;
  std::string chunk_in_flight_;
  net::steady_timer write_timer_;
};

}  // namespace fp6serve::server
