-- mod_auth_http for bench/compare: authentication = "http" in Prosody 0.12.
--
-- Debian 12's prosody-modules snapshot does not ship the community module
-- mod_auth_http, so bench/compare loads this stand-in, written for the
-- benchmark from the protocol description in shared/seeds/mod_auth_http.md
-- (the same protocol Jackdaw's auth_http speaks):
--
--   GET  {http_auth_url}/check_password?user=&server=&pass=  -> 200 "true"/"false"
--   GET  {http_auth_url}/user_exists?user=&server=           -> 200 "true"/"false"
--   POST {http_auth_url}/register      (form user, server, pass) -> 201, 409 exists
--   POST {http_auth_url}/set_password  (form user, server, pass) -> 200/201/204
--   POST {http_auth_url}/remove_user   (form user, server)       -> 200/201/204
--
-- Like the community module it offers SASL PLAIN only and waits for the web
-- app with net.http inside the session's async runner, so one slow answer
-- does not block the server's event loop. If bench/compare finds a real
-- mod_auth_http installed (/usr/lib/prosody/modules/mod_auth_http), it uses
-- that one instead.

local http = require "net.http";
local async = require "util.async";
local new_sasl = require "util.sasl".new;
local formencode = require "util.http".formencode;
local b64 = require "util.encodings".base64.encode;

local host = module.host;
local api_base = module:get_option_string("http_auth_url"):gsub("%$host", host):gsub("/$", "");
local credentials = module:get_option_string("http_auth_credentials");

local headers = {};
if credentials then
	headers["Authorization"] = "Basic " .. b64(credentials);
end

-- One call of the protocol. Returns the status code and body, or nil and an
-- error when the web app could not be reached.
local function call(method, params, post)
	params.server = host;
	local form = formencode(params);
	local url, options;
	if post then
		url = api_base .. "/" .. method;
		options = { method = "POST", body = form, headers = headers };
	else
		url = api_base .. "/" .. method .. "?" .. form;
		options = { method = "GET", headers = headers };
	end
	local response, err = async.wait_for(http.request(url, options));
	if not response then
		module:log("warn", "auth web app unreachable (%s): %s", method, tostring(err));
		return nil, "web app unreachable";
	end
	return response.code, response.body;
end

local provider = {};

function provider.test_password(username, password)
	local code, body = call("check_password", { user = username, pass = password });
	if code == 200 and body == "true" then
		return true;
	end
	return nil, "Auth failed. Invalid username or password.";
end

function provider.user_exists(username)
	local code, body = call("user_exists", { user = username });
	if code == 200 and body == "true" then
		return true;
	end
	return nil, "No such user";
end

function provider.create_user(username, password)
	local code = call("register", { user = username, pass = password }, true);
	if code == 201 then
		return true;
	elseif code == 409 then
		return nil, "User exists";
	end
	return nil, "Registration failed";
end

function provider.set_password(username, password)
	local code = call("set_password", { user = username, pass = password }, true);
	if code == 200 or code == 201 or code == 204 then
		return true;
	end
	return nil, "Password change failed";
end

function provider.delete_user(username)
	local code = call("remove_user", { user = username }, true);
	if code == 200 or code == 201 or code == 204 then
		return true;
	end
	return nil, "Removal failed";
end

function provider.users()
	return function() return nil; end;
end

function provider.get_sasl_handler()
	return new_sasl(host, {
		plain_test = function(_, username, password)
			return provider.test_password(username, password), true;
		end;
	});
end

module:provides("auth", provider);
