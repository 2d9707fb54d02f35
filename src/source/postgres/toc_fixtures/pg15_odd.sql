--
-- PostgreSQL database dump
--

\restrict bZ019GioLekZVU5YCnox8Dn1CjVgVDeGiAOWqoZs7wlQPT8binEyNfFrKddjGdU

-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: My Schema; Type: SCHEMA; Schema: -; Owner: postgres
--

CREATE SCHEMA "My Schema";


ALTER SCHEMA "My Schema" OWNER TO postgres;

--
-- Name: postgres_fdw; Type: EXTENSION; Schema: -; Owner: -
--

CREATE EXTENSION IF NOT EXISTS postgres_fdw WITH SCHEMA public;


--
-- Name: EXTENSION postgres_fdw; Type: COMMENT; Schema: -; Owner: 
--

COMMENT ON EXTENSION postgres_fdw IS 'foreign-data wrapper for remote PostgreSQL servers';


--
-- Name: posint; Type: DOMAIN; Schema: public; Owner: postgres
--

CREATE DOMAIN public.posint AS integer;


ALTER DOMAIN public.posint OWNER TO postgres;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: t; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.t (
    id integer NOT NULL,
    a integer,
    b public.posint
);


ALTER TABLE public.t OWNER TO postgres;

--
-- Name: count_t(); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.count_t() RETURNS bigint
    LANGUAGE sql
    BEGIN ATOMIC
 SELECT count(*) AS count
    FROM public.t;
END;


ALTER FUNCTION public.count_t() OWNER TO postgres;

--
-- Name: noop(); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.noop() RETURNS trigger
    LANGUAGE plpgsql
    AS $$ begin return new; end $$;


ALTER FUNCTION public.noop() OWNER TO postgres;

--
-- Name: on_ddl(); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.on_ddl() RETURNS event_trigger
    LANGUAGE plpgsql
    AS $$ begin end $$;


ALTER FUNCTION public.on_ddl() OWNER TO postgres;

--
-- Name: remote; Type: SERVER; Schema: -; Owner: postgres
--

CREATE SERVER remote FOREIGN DATA WRAPPER postgres_fdw OPTIONS (
    dbname 'x'
);


ALTER SERVER remote OWNER TO postgres;

--
-- Name: My; Type: TABLE; Schema: My Schema; Owner: postgres
--

CREATE TABLE "My Schema"."My" (
    id integer NOT NULL
);


ALTER TABLE "My Schema"."My" OWNER TO postgres;

--
-- Name: My Table; Type: TABLE; Schema: My Schema; Owner: Data Team
--

CREATE TABLE "My Schema"."My Table" (
    id integer NOT NULL,
    my integer
);


ALTER TABLE "My Schema"."My Table" OWNER TO "Data Team";

--
-- Name: Order; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public."Order" (
    id integer NOT NULL,
    parent integer
);


ALTER TABLE public."Order" OWNER TO postgres;

--
-- Name: parent; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.parent (
    id integer
);


ALTER TABLE public.parent OWNER TO postgres;

--
-- Name: child; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.child (
    extra text
)
INHERITS (public.parent);


ALTER TABLE public.child OWNER TO postgres;

--
-- Name: ft; Type: FOREIGN TABLE; Schema: public; Owner: postgres
--

CREATE FOREIGN TABLE public.ft (
    id integer
)
SERVER remote;


ALTER FOREIGN TABLE public.ft OWNER TO postgres;

--
-- Name: odd.name; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public."odd.name" (
    id integer NOT NULL
);


ALTER TABLE public."odd.name" OWNER TO postgres;

--
-- Name: My Table My Table_pkey; Type: CONSTRAINT; Schema: My Schema; Owner: Data Team
--

ALTER TABLE ONLY "My Schema"."My Table"
    ADD CONSTRAINT "My Table_pkey" PRIMARY KEY (id);


--
-- Name: My My_pkey; Type: CONSTRAINT; Schema: My Schema; Owner: postgres
--

ALTER TABLE ONLY "My Schema"."My"
    ADD CONSTRAINT "My_pkey" PRIMARY KEY (id);


--
-- Name: Order Order_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public."Order"
    ADD CONSTRAINT "Order_pkey" PRIMARY KEY (id);


--
-- Name: odd.name odd.name_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public."odd.name"
    ADD CONSTRAINT "odd.name_pkey" PRIMARY KEY (id);


--
-- Name: posint posint_check; Type: CHECK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER DOMAIN public.posint
    ADD CONSTRAINT posint_check CHECK ((VALUE > 0)) NOT VALID;


--
-- Name: t t_a_check; Type: CHECK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE public.t
    ADD CONSTRAINT t_a_check CHECK ((a > 0)) NOT VALID;


--
-- Name: t t_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.t
    ADD CONSTRAINT t_pkey PRIMARY KEY (id);


--
-- Name: CONSTRAINT t_pkey ON t; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON CONSTRAINT t_pkey ON public.t IS 'pk';


--
-- Name: My Table idx; Type: INDEX; Schema: My Schema; Owner: Data Team
--

CREATE INDEX "My Table idx" ON "My Schema"."My Table" USING btree (my);


--
-- Name: t_a_idx; Type: INDEX; Schema: public; Owner: postgres
--

CREATE INDEX t_a_idx ON public.t USING btree (a);


--
-- Name: INDEX t_a_idx; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON INDEX public.t_a_idx IS 'idx';


--
-- Name: t_ab; Type: STATISTICS; Schema: public; Owner: postgres
--

CREATE STATISTICS public.t_ab ON a, b FROM public.t;


ALTER STATISTICS public.t_ab OWNER TO postgres;

--
-- Name: t t_rule; Type: RULE; Schema: public; Owner: postgres
--

CREATE RULE t_rule AS
    ON UPDATE TO public.t
   WHERE false DO INSTEAD NOTHING;


--
-- Name: RULE t_rule ON t; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON RULE t_rule ON public.t IS 'rule';


--
-- Name: t t_noop; Type: TRIGGER; Schema: public; Owner: postgres
--

CREATE TRIGGER t_noop BEFORE INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.noop();


--
-- Name: TRIGGER t_noop ON t; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON TRIGGER t_noop ON public.t IS 'trg';


--
-- Name: My Table My Table_my_fkey; Type: FK CONSTRAINT; Schema: My Schema; Owner: Data Team
--

ALTER TABLE ONLY "My Schema"."My Table"
    ADD CONSTRAINT "My Table_my_fkey" FOREIGN KEY (my) REFERENCES "My Schema"."My"(id);


--
-- Name: Order Order_parent_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public."Order"
    ADD CONSTRAINT "Order_parent_fkey" FOREIGN KEY (parent) REFERENCES public."Order"(id);


--
-- Name: t t_all; Type: POLICY; Schema: public; Owner: postgres
--

CREATE POLICY t_all ON public.t USING (true);


--
-- Name: POLICY t_all ON t; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON POLICY t_all ON public.t IS 'pol';


--
-- Name: pub; Type: PUBLICATION; Schema: -; Owner: postgres
--

CREATE PUBLICATION pub WITH (publish = 'insert, update, delete, truncate');


ALTER PUBLICATION pub OWNER TO postgres;

--
-- Name: pub Order; Type: PUBLICATION TABLE; Schema: public; Owner: postgres
--

ALTER PUBLICATION pub ADD TABLE ONLY public."Order";


--
-- Name: pub t; Type: PUBLICATION TABLE; Schema: public; Owner: postgres
--

ALTER PUBLICATION pub ADD TABLE ONLY public.t;


--
-- Name: DEFAULT PRIVILEGES FOR TABLES; Type: DEFAULT ACL; Schema: public; Owner: postgres
--

ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT SELECT ON TABLES  TO "Data Team";


--
-- Name: ddl_log; Type: EVENT TRIGGER; Schema: -; Owner: postgres
--

CREATE EVENT TRIGGER ddl_log ON ddl_command_start
   EXECUTE FUNCTION public.on_ddl();


ALTER EVENT TRIGGER ddl_log OWNER TO postgres;

--
-- PostgreSQL database dump complete
--

\unrestrict bZ019GioLekZVU5YCnox8Dn1CjVgVDeGiAOWqoZs7wlQPT8binEyNfFrKddjGdU

