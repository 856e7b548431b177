#include "server/connection.h"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/write.hpp>

namespace fp6serve::server {

namespace beast = boost::beast;
using error_code = beast::error_code;

Connection::Connection(net::ip::tcp::socket socket, const ConnectionLimits& limits, Handler& handler,
                       std::shared_ptr<void> slot)
    : stream_(std::move(socket)),
      limits_(limits),
      handler_(handler),
      slot_(std::move(slot)),
      write_timer_(stream_.get_executor()) {}

void Connection::start() {
  net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read_request(); });
}

void Connection::read_request() {
  parser_.emplace();
  parser_->header_limit(static_cast<uint32_t>(limits_.max_header_bytes));
  parser_->body_limit(limits_.max_body_bytes);
  // One deadline for the whole request (and for the idle time before it): a client that
  // sends a byte now and then cannot hold the connection open past it.
  stream_.expires_after(limits_.request_timeout);
  http::async_read(stream_, buffer_, *parser_,
                   [self = shared_from_this()](error_code ec, size_t) { self->on_read(ec); });
}

void Connection::on_read(error_code ec) {
  if (ec == http::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset ||
      ec == net::error::operation_aborted)
    return close();
  // The deadline closed the socket (idle keep-alive, or a request too slow to arrive).
  if (ec == beast::error::timeout) return close();
  if (ec == http::error::body_limit)
    return reject(http::status::payload_too_large, "the request body is larger than the server accepts");
  if (ec == http::error::header_limit)
    return reject(http::status::request_header_fields_too_large, "the request headers are larger than allowed");
  if (ec) return reject(http::status::bad_request, "malformed HTTP request: " + ec.message());
  stream_.expires_never();
  Request request = parser_->release();
  keep_alive_ = request.keep_alive();
  request_line_ = std::string(request.method_string()) + " " + std::string(request.target().substr(0, 200));
  for (char& c : request_line_)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';  // no log injection
  status_ = 0;
  started_ = std::chrono::steady_clock::now();
  answering_ = true;
  handler_.on_request(shared_from_this(), std::move(request));
  if (answering_) watch();
}

void Connection::reject(http::status status, const std::string& why) {
  request_line_ = "(unreadable request)";
  started_ = std::chrono::steady_clock::now();
  stream_.expires_never();
  keep_alive_ = false;
  answering_ = true;
  handler_.on_unreadable(shared_from_this(), status, why);
}

// A read while the answer is pending: data means a pipelined request (kept for later), an
// error means the client left.
void Connection::watch() {
  if (watching_ || gone_) return;
  watching_ = true;
  stream_.async_read_some(buffer_.prepare(4096), [self = shared_from_this()](error_code ec, size_t n) {
    self->watching_ = false;
    if (!ec) {
      self->buffer_.commit(n);
      if (!self->answering_) self->read_request();
      return;
    }
    if (!self->answering_) {  // cancelled by finish_answer: the next request follows
      if (ec == net::error::operation_aborted && self->stream_.socket().is_open()) return self->read_request();
      return self->close();
    }
    if (ec != net::error::operation_aborted) self->lost();
  });
}

void Connection::reply(http::status status, std::string content_type, std::string body, bool close,
                       std::vector<std::pair<std::string, std::string>> headers) {
  if (gone_ || !stream_.socket().is_open()) return;
  status_ = static_cast<int>(status);
  response_.emplace(status, 11);
  response_->set(http::field::server, "fp6serve");
  response_->set(http::field::content_type, content_type);
  for (auto& [name, value] : headers) response_->set(name, value);
  for (auto& [name, value] : answer_headers_) response_->set(name, value);
  answer_headers_.clear();
  response_->body() = std::move(body);
  close_after_ = close || !keep_alive_;
  response_->keep_alive(!close_after_);
  response_->prepare_payload();
  writing_ = true;
  write_timer_.expires_after(limits_.write_timeout);
  write_timer_.async_wait([self = shared_from_this()](error_code ec) {
    if (!ec) self->lost();
  });
  http::async_write(stream_, *response_, [self = shared_from_this()](error_code ec, size_t) {
    self->writing_ = false;
    self->write_timer_.cancel();
    self->response_.reset();
    if (ec) return self->answering_ ? self->lost() : self->close();
    self->finish_answer();
  });
}

void Connection::begin_stream(std::string content_type) {
  if (gone_) return;
  status_ = 200;
  stream_head_.emplace(http::status::ok, 11);
  stream_head_->set(http::field::server, "fp6serve");
  stream_head_->set(http::field::content_type, content_type);
  stream_head_->set(http::field::cache_control, "no-cache");
  for (auto& [name, value] : answer_headers_) stream_head_->set(name, value);
  answer_headers_.clear();
  stream_head_->keep_alive(keep_alive_);
  stream_head_->chunked(true);
  head_serializer_.emplace(*stream_head_);
  streaming_ = true;
  write_next();
}

void Connection::send(std::string data) {
  if (gone_ || data.empty()) return;
  chunks_.push_back(std::move(data));
  write_next();
}

void Connection::end_stream() {
  ending_ = true;
  write_next();
}

// One write at a time, each with its deadline: the stream's headers, then the queued chunks
// in order, then the last (empty) chunk.
void Connection::write_next() {
  if (writing_ || gone_ || !streaming_) return;
  enum class What { kHead, kChunk, kLast };
  auto done = [self = shared_from_this()](What what) {
    return [self, what](error_code ec, size_t) {
      self->writing_ = false;
      self->write_timer_.cancel();
      if (ec) return self->lost();
      if (what == What::kHead) self->head_serializer_.reset();
      if (what == What::kLast) {
        self->streaming_ = false;
        self->stream_head_.reset();
        return self->finish_answer();
      }
      self->write_next();
    };
  };
  writing_ = true;
  write_timer_.expires_after(limits_.write_timeout);
  write_timer_.async_wait([self = shared_from_this()](error_code ec) {
    if (!ec) self->lost();
  });
  if (head_serializer_) {
    http::async_write_header(stream_, *head_serializer_, done(What::kHead));
  } else if (!chunks_.empty()) {
    chunk_in_flight_ = std::move(chunks_.front());
    chunks_.pop_front();
    net::async_write(stream_, http::make_chunk(net::buffer(chunk_in_flight_)), done(What::kChunk));
  } else if (ending_) {
    ending_ = false;
    net::async_write(stream_, http::make_chunk_last(), done(What::kLast));
  } else {
    writing_ = false;
    write_timer_.cancel();
  }
}

double Connection::answer_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
}

void Connection::finish_answer() {
  handler_.on_answered(request_line_, status_, answer_seconds());
  answering_ = false;
  on_gone_ = nullptr;
  if (close_after_ || !keep_alive_) return close();
  if (watching_) {
    // The watch's completion (aborted) starts the next read: two reads may not overlap.
    error_code ec;
    stream_.socket().cancel(ec);
    return;
  }
  read_request();
}

void Connection::lost() {
  if (gone_) return;
  gone_ = true;
  if (answering_) handler_.on_answered(request_line_, 499, answer_seconds());  // the client left first
  if (auto fn = std::move(on_gone_)) fn();
  close();
}

void Connection::close() {
  error_code ec;
  write_timer_.cancel();
  stream_.socket().shutdown(net::ip::tcp::socket::shutdown_both, ec);
  stream_.socket().close(ec);
}

}  // namespace fp6serve::server
